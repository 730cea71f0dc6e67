"""`affectflow serve` restarts, and a resplit while build-features writes."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest

from affectflow.local_prefect import stop
from tests.conftest import BIN

pytestmark = pytest.mark.slow


def _start_serve(env: dict, log) -> subprocess.Popen:
    proc = subprocess.Popen([str(BIN / "affectflow"), "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return proc


def _nightly_runs(api: str) -> list[tuple[str, str]]:
    deployments = httpx.post(f"{api}/deployments/filter", json={"deployments": {"name": {"any_": ["nightly"]}}},
                             timeout=10).json()
    if not deployments:
        return []
    body = {"flow_runs": {"deployment_id": {"any_": [deployments[0]["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}}}
    runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()
    return sorted((r["id"], r["expected_start_time"]) for r in runs)


def _wait_for_runs(api: str, proc: subprocess.Popen, at_least: int, timeout: float = 90) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "affectflow serve exited"
        runs = _nightly_runs(api)
        if len(runs) >= at_least:
            return runs
        time.sleep(1)
    raise AssertionError(f"fewer than {at_least} scheduled nightly runs after {timeout}s")


def test_restarting_serve_does_not_duplicate_scheduled_runs(prefect_server, tmp_path, shared_dir):
    env = dict(prefect_server, AFFECTFLOW_HOME=str(tmp_path / "home"))
    api = env["PREFECT_API_URL"]
    with open(tmp_path / "serve.log", "w") as log:
        first = _start_serve(env, log)
        try:
            before = _wait_for_runs(api, first, at_least=3)
        finally:
            stop(first)
        second = _start_serve(env, log)
        try:
            time.sleep(15)  # the scheduler looks at recently updated deployments every 5 s
            after = _wait_for_runs(api, second, at_least=len(before))
        finally:
            stop(second)
    times = [t for _, t in after]
    assert len(times) == len(set(times)), "two scheduled runs for the same time"
    # Prefect replaces a redeployed schedule's future runs (new ids), at the same times, once each
    assert {t for _, t in before} <= set(times)


def test_resplit_while_build_features_writes(prefect_server, tmp_path, shared_dir):
    home = tmp_path / "home"
    env = dict(os.environ, AFFECTFLOW_HOME=str(home), PREFECT_API_URL=prefect_server["PREFECT_API_URL"])
    labelled = shared_dir / "data/openface-labelled"
    first = subprocess.run([str(BIN / "affectflow"), "build-features", str(labelled / "[ah]*.csv")],
                           env=env, capture_output=True, text=True)  # anger and happiness first
    assert first.returncode == 0, first.stderr
    build = subprocess.Popen([str(BIN / "affectflow"), "build-features", str(labelled), "--workers", "1"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    resplit = subprocess.run([str(BIN / "affectflow"), "resplit", "--json"], env=env, capture_output=True, text=True)
    assert build.wait(600) == 0, build.stderr.read()
    assert resplit.returncode == 0, resplit.stderr
    check = subprocess.run([str(BIN / "affectflow"), "query", "--format", "json",
                            "select count(*) n from splits s join current_split c on s.split_id = c.split_id "
                            "left join videos v on v.video_id = s.video_id where v.video_id is null"],
                           env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert '"n": 0' in check.stdout  # every unit of the published split is a loaded video
