"""Past one process: a real Dask cluster and a real worker on a real process work pool."""

from __future__ import annotations

import subprocess

import pytest

from affectflow.local_prefect import stop
from flows.build_features import build_features
from tests.conftest import BIN, REPO, run_cli
from warehouse import Warehouse
from warehouse.query import run_query

pytestmark = pytest.mark.slow
FINGERPRINT = """select video_id, count(*) n, sum(success) s, round(sum(x_0), 2) x, round(sum(AU12_r), 3) au
                 from frames group by all order by all"""


def test_dask_cluster_gives_the_serial_warehouse(tmp_path, prefect_api, shared_dir, monkeypatch, mediapipe_models_dir):
    monkeypatch.setenv("PREFECT_API_URL", prefect_api["PREFECT_API_URL"])  # for the Dask worker processes
    monkeypatch.setenv("AFFECTFLOW_MODELS_DIR", str(mediapipe_models_dir))
    source = str(shared_dir / "fixtures/openface/mode_A")
    results = {}
    for runner, workers in (("thread", 1), ("dask", 2), ("process", 2)):
        home = tmp_path / runner
        monkeypatch.setenv("AFFECTFLOW_HOME", str(home))
        summary = build_features(source=source, task_runner=runner, workers=workers)
        assert (summary["loaded"], summary["quarantined"]) == (5, 0)
        results[runner] = run_query(Warehouse(home), FINGERPRINT).to_pylist()
    assert results["dask"] == results["thread"] == results["process"]
    assert sum(r["n"] for r in results["dask"]) == 977


def test_worker_on_a_process_pool_runs_build_features(prefect_server, tmp_path, shared_dir):
    env = dict(prefect_server, AFFECTFLOW_HOME=str(tmp_path / "home"), AFFECTFLOW_REPO=str(REPO))
    pool = run_cli(["prefect", "work-pool", "create", "affectflow", "--type", "process", "--overwrite"], env=env)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deploy = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "affectflow"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        run = run_cli(["prefect", "deployment", "run", "build-features/default", "--param",
                       f"source={shared_dir / 'fixtures/openface/mode_A/single_face.csv'}", "--watch"], env=env)
        assert run.returncode == 0, run.stdout + run.stderr + (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        stop(worker)
    rows = run_query(Warehouse(tmp_path / "home"), "select count(*) n from frames").to_pylist()
    assert rows == [{"n": 72}]
    schedule = run_cli(["prefect", "deployment", "inspect", "resplit/nightly"], env=env)
    assert "0 2 * * *" in schedule.stdout
