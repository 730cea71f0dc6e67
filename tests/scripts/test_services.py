"""`scripts/services.sh`: the background services behind `make demo` start, stop for real, and
start again cleanly."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from affectflow.local_prefect import free_port
from tests.conftest import REPO

pytestmark = pytest.mark.slow
SERVICES = REPO / "scripts" / "services.sh"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is gone for every purpose here
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


def _services(action: str, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([str(SERVICES), action], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture()
def services_env(tmp_path: Path, mediapipe_models_dir: Path) -> dict:
    port = free_port()
    home = tmp_path / "home"
    (home / "prefect").mkdir(parents=True)
    return dict(os.environ, AFFECTFLOW_HOME=str(home), PREFECT_HOME=str(home / "prefect"),
                PREFECT_API_URL=f"http://127.0.0.1:{port}/api", PREFECT_SERVER_ANALYTICS_ENABLED="false",
                PREFECT_SERVER_UI_ENABLED="false", AFFECTFLOW_MODELS_DIR=str(mediapipe_models_dir))


def _pids(env: dict) -> dict[str, int]:
    run_dir = Path(env["AFFECTFLOW_HOME"]) / "services"
    return {name: int((run_dir / f"{name}.pid").read_text()) for name in ("server", "serve")}


def test_stop_ends_both_services_and_start_works_again(services_env: dict):
    started = _services("start", services_env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        pids = _pids(services_env)
        assert all(_alive(pid) for pid in pids.values())
        t0 = time.monotonic()
        stopped = _services("stop", services_env)
        took = time.monotonic() - t0
        assert stopped.returncode == 0, stopped.stderr
        assert not any(_alive(pid) for pid in pids.values()), "a service outlived `services.sh stop`"
        assert took < 15, f"stop took {took:.1f} s"
        assert "stopped serve" in stopped.stdout and "stopped server" in stopped.stdout
        assert "SIGKILL" not in stopped.stderr  # both exited on SIGTERM, not on the fallback
        run_dir = Path(services_env["AFFECTFLOW_HOME"]) / "services"
        assert not list(run_dir.glob("*.pid")), "stale pid files after stop"
        assert _services("stop", services_env).stdout.count("not running") == 2
        again = _services("start", services_env)  # same port: released by the stopped server
        assert again.returncode == 0, again.stdout + again.stderr
        assert "deployments served" in again.stdout
    finally:
        _services("stop", services_env)


def test_serve_exits_on_sigterm_after_the_server_is_gone(services_env: dict):
    started = _services("start", services_env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        pids = _pids(services_env)
        os.killpg(pids["server"], 9)  # the server vanishes first, without a word to anyone
        while _alive(pids["server"]):
            time.sleep(0.1)
        t0 = time.monotonic()
        os.kill(pids["serve"], 15)
        while _alive(pids["serve"]) and time.monotonic() - t0 < 30:
            time.sleep(0.1)
        took = time.monotonic() - t0
        assert not _alive(pids["serve"]), "affectflow serve still running 30 s after SIGTERM"
        assert took < 15, f"affectflow serve took {took:.1f} s to exit"
        log = (Path(services_env["AFFECTFLOW_HOME"]) / "services" / "serve.log").read_text()
        assert "SIGTERM received, stopping" in log
        assert "never awaited" not in log
    finally:
        _services("stop", services_env)
