"""End to end: a flow run of `train/default` created through the Prefect server's REST API with
custom parameters (what the UI's Run form does) completes and writes a checkpoint and metrics;
a bad parameter is refused by the server before any run exists."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
import torch

from tasks.checkpoint import load_checkpoint
from tests.synthetic_training import build_warehouse
from warehouse import Warehouse
from warehouse.catalog import connect

SPLIT = "train-e2e"
PARAMS = {"split_id": SPLIT, "epochs": 3, "window": 4, "hidden": 16, "encoder": "transformer",
          "loss_weighting": "gradnorm", "seed": 7, "device": "cpu"}


def _deployment_id(api: str) -> str:
    response = httpx.get(f"{api}/deployments/name/train/default", timeout=10)
    response.raise_for_status()
    return response.json()["id"]


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
    response = httpx.post(f"{api}/deployments/{deployment}/create_flow_run",
                          json={"parameters": {"params": PARAMS}}, timeout=30)
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
    assert isinstance(predictor.model.encoder.position, torch.nn.Parameter)
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
    response = httpx.post(f"{api}/deployments/{deployment}/create_flow_run",
                          json={"parameters": {"params": {**PARAMS, "epochs": -1}}}, timeout=30)
    assert response.status_code in (409, 422), response.text
    assert "epochs" in response.text
