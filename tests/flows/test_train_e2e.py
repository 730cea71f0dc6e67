"""End to end: a flow run of `train/default` created through the Prefect server's REST API with
custom parameters (what the UI's Run form does) completes and writes a checkpoint and metrics;
a bad parameter is refused by the server before any run exists. `affectflow train` from the
command line: no RuntimeWarning in its output, one line and no run when there is no split, and
a split without a test partition trains but says why it reports no test metrics."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from data_contracts import CONTRACT_VERSION, FRAMES, LABELS, VIDEOS, feature_columns
from tasks.checkpoint import load_checkpoint
from tests.conftest import run_cli
from tests.synthetic_training import (
    MEDIAPIPE_SOURCE,
    OPENFACE_COLUMNS,
    OPENFACE_SOURCE,
    build_warehouse,
)
from warehouse import Warehouse
from warehouse.catalog import connect
from warehouse.writer import rows_to_table, write_atomic

SPLIT = "train-e2e"
PARAMS = {"split_id": SPLIT, "epochs": 3, "window": 4, "hidden": 16, "encoder": "transformer",
          "loss_weighting": "gradnorm", "seed": 7, "device": "cpu"}


def _create_run(api: str, deployment: str, params: dict) -> httpx.Response:
    """POST create_flow_run as the UI does, retrying a 503 (the server's database busy on a
    loaded machine) the way Prefect's own client does."""
    for attempt in range(5):
        response = httpx.post(f"{api}/deployments/{deployment}/create_flow_run",
                              json={"parameters": {"params": params}}, timeout=30)
        if response.status_code != 503:
            break
        time.sleep(2 ** attempt)
    return response


def _deployment_id(api: str, wait_s: float = 120) -> str:
    """train/default's id; `affectflow serve` registers its deployments one after another, and the
    `served` fixture is ready at the first, so this one may take a moment longer."""
    deadline = time.monotonic() + wait_s
    while True:
        response = httpx.get(f"{api}/deployments/name/train/default", timeout=10)
        if response.status_code != 404 or time.monotonic() > deadline:
            response.raise_for_status()
            return response.json()["id"]
        time.sleep(1)


def _wait(api: str, flow_run_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} not finished after {timeout}s")


@pytest.mark.slow
def test_train_deployment_runs_from_the_api(served: dict) -> None:
    api, home = served["PREFECT_API_URL"], Path(served["AFFECTFLOW_HOME"])
    build_warehouse(home, videos_per_class=8, n_frames=8, split_id=SPLIT, publish=False)
    deployment = _deployment_id(api)
    response = _create_run(api, deployment, PARAMS)
    assert response.status_code == 201, response.text
    run = _wait(api, response.json()["id"])
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert "RuntimeWarning" not in (home / "serve.log").read_text()  # the run's output, as `serve` printed it

    con = connect(Warehouse(home))
    runs = con.execute("SELECT run_id, status, checkpoint, encoder, loss_weighting FROM training_runs "
                       "WHERE split_id = ?", [SPLIT]).fetchall()
    assert len(runs) == 1 and runs[0][1:2] == ("completed",) and runs[0][3:] == ("transformer", "gradnorm")
    predictor = load_checkpoint(Path(runs[0][2]))
    assert predictor.meta["split_id"] == SPLIT and predictor.model.config.encoder == "transformer"
    assert len(predictor.model.members) == 5  # the default ensemble
    assert all(isinstance(m.encoder.position, torch.nn.Parameter) for m in predictor.model.members)
    metrics = con.execute("SELECT model, count(*) FROM metrics WHERE run_id = ? GROUP BY model ORDER BY model",
                          [runs[0][0]]).fetchall()
    assert [m for m, _ in metrics] == ["logreg", "majority", "model"]
    artifacts = httpx.post(f"{api}/artifacts/filter", timeout=10,
                           json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    keys = {a["key"] for a in artifacts}
    long_floats = [(a["key"], re.findall(r"\d\.\d{5,}", json.dumps(a["data"]))) for a in artifacts
                   if a["type"] in ("table", "markdown")]
    assert all(not found for _, found in long_floats), long_floats  # numbers a person reads, not 2009.5335108778058
    assert {"train-metrics", "train-loss-curves", "train-confusion-matrix", "train-progress"} <= keys


@pytest.mark.slow
def test_server_refuses_negative_epochs(served: dict) -> None:
    api = served["PREFECT_API_URL"]
    deployment = _deployment_id(api)
    response = _create_run(api, deployment, {**PARAMS, "epochs": -1})
    assert response.status_code in (409, 422), response.text
    assert "epochs" in response.text


def test_the_flow_defaults_are_the_training_defaults() -> None:
    # `affectflow train` with no options is the configuration the benchmark and the README measure
    from flows.train import TrainParams
    from tasks.train import TrainConfig

    assert TrainParams().train_config() == TrainConfig()


def _cli_env(home: Path, server: dict) -> dict:
    return {**os.environ, **server, "AFFECTFLOW_HOME": str(home), "PYTHONWARNINGS": "always"}


def _surprise_only_in_openface(home: Path) -> None:
    """Two OpenFace videos of a label no MediaPipe video has: the warehouse report's MediaPipe
    histograms then have a label without a single value (numpy warned dividing 0 by 0 there)."""
    wh = Warehouse(home)
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    ids = ["surprise-a", "surprise-b"]
    frames = [{"source_id": v, "video_id": v, "frame": 0, "face_id": 0, "timestamp": 0.0, "success": 1,
               "confidence": 0.9, **{c: 1.0 for c in OPENFACE_COLUMNS}} for v in ids]
    videos = [{"source_id": v, "video_id": v, "path": f"/data/{v}.csv", "kind": "image", "n_frames": 1,
               "n_face_frames": 1, "face_rate": 1.0, "extractor": "openface-csv", "extractor_version": "t",
               "extractor_config": "{}", "config_hash": "x", "contract_version": CONTRACT_VERSION, "run_id": "r",
               "extracted_at": now} for v in ids]
    labels = [{"video_id": v, "source_id": v, "emotion": "surprise", "label_source": "folder"} for v in ids]
    for table, rows in ((FRAMES, frames), (VIDEOS, videos), (LABELS, labels)):
        write_atomic(wh.file_for(table.name, "surprise"), rows_to_table(table, rows))


@pytest.mark.slow
def test_cli_train_of_one_extractor_in_a_mixed_warehouse_prints_no_runtime_warning(tmp_path: Path,
                                                                                    prefect_server: dict) -> None:
    home = tmp_path / "home"
    build_warehouse(home, videos_per_class=8, n_frames=4, sources=(MEDIAPIPE_SOURCE, OPENFACE_SOURCE))
    _surprise_only_in_openface(home)
    env = _cli_env(home, prefect_server)
    refused = run_cli(["affectflow", "train"], env=env)
    assert refused.returncode == 1 and "mixes extractors" in refused.stderr and "--extractor" in refused.stderr
    done = run_cli(["affectflow", "train", "--extractor", "mediapipe", "--epochs", "2", "--ensemble", "2",
                    "--window", "4", "--no-select-regularisation"], env=env)
    assert done.returncode == 0, done.stderr
    assert "RuntimeWarning" not in done.stdout + done.stderr
    columns = len(feature_columns("mediapipe"))  # the contract's, whatever it declares
    assert f"12 of {columns} mediapipe feature columns" in done.stdout and "same 20 labelled units" in done.stdout
    status = connect(Warehouse(home)).execute("SELECT status, extractor, n_features FROM training_runs").fetchall()
    assert status == [("completed", "mediapipe", 12)]


@pytest.mark.slow
def test_cli_train_without_a_split_answers_in_one_line_and_leaves_no_run(tmp_path: Path, prefect_server: dict) -> None:
    home = tmp_path / "empty"
    env = _cli_env(home, prefect_server)
    before = httpx.post(f"{prefect_server['PREFECT_API_URL']}/flow_runs/count", json={}, timeout=10).json()
    code = ("import sys; from affectflow.cli import main; rc = main(['train']); "
            "print(rc, 'prefect' in sys.modules, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["1", "False", "False"]  # answered before Prefect or torch was imported
    assert done.stderr.strip().splitlines() == ["affectflow: error: no published split yet; run `affectflow resplit` first"]
    after = httpx.post(f"{prefect_server['PREFECT_API_URL']}/flow_runs/count", json={}, timeout=10).json()
    assert after == before and not (home / "parquet" / "training_runs").exists()


@pytest.mark.slow
def test_cli_train_on_a_split_without_test_units_says_why_there_are_no_metrics(tmp_path: Path,
                                                                                 prefect_server: dict) -> None:
    home = tmp_path / "home"
    build_warehouse(home, videos_per_class=8, n_frames=8, publish=False)
    env = _cli_env(home, prefect_server)
    split = run_cli(["affectflow", "resplit", "--strategy", "row", "--test-fraction", "0"], env=env)
    assert split.returncode == 0, split.stderr
    done = run_cli(["affectflow", "train", "--epochs", "2", "--ensemble", "2", "--window", "4", "--json"], env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["metrics"] == [] and "has no test partition" in summary["no_test"]
    assert "--test-fraction 0" in summary["no_test"]
