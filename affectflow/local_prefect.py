"""A private Prefect server on 127.0.0.1 (own database, free port), for tests and benchmarks.

`make demo` and `make serve` use `scripts/services.sh` instead (a long-lived server in the
background); this module starts one for the life of a test session or a benchmark and stops it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


class ServerError(RuntimeError):
    """The server exited early or did not answer in time; the message carries its log tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    """Poll `url` until it answers 200; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"process exited early; log:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ServerError(f"{url} not up after {timeout:.0f} s; log:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextmanager
def prefect_server(root: Path, timeout: float = 180, **settings: str) -> Iterator[dict[str, str]]:
    """Start `prefect server start` with its home under `root`; yield the environment that
    reaches it (this process's environment plus the server's settings and `settings`)."""
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(root / "home"), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_UI_URL=f"http://127.0.0.1:{port}", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_UI_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING", **settings)
    root.mkdir(parents=True, exist_ok=True)
    log = root / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", proc, timeout, log)
        yield env
    finally:
        stop(proc)
