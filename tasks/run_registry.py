"""Runs in progress on this machine, so that a killed run does not stay "Running" forever.

Each flow run writes `<home>/active-runs/<run_id>.json` (process id, its start time, host) when
it starts and removes it when it ends, however it ends. A run killed with SIGKILL (the OOM
killer, a power cut, `kill -9`) cannot remove its file: the next run on the same machine finds
the process gone and marks that flow run Crashed on the Prefect server, as a Prefect worker
would, with a message saying what happened.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

log = logging.getLogger(__name__)


def _dir(home: Path) -> Path:
    return home / "active-runs"


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (changes when a pid is reused)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@contextmanager
def active_run(home: Path, run_id: str, flow: str) -> Iterator[None]:
    """Record this run as in progress for the life of the block."""
    folder = _dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / f"{_safe(run_id)}.json"
    pid = os.getpid()
    record.write_text(json.dumps({"run_id": run_id, "flow": flow, "pid": pid, "started": _started(pid),
                                  "host": socket.gethostname()}))
    try:
        yield
    finally:
        record.unlink(missing_ok=True)


def current_run_id() -> str:
    """This flow run's id on the Prefect server; outside a flow run, a local one."""
    import time

    from prefect.runtime import flow_run

    return str(flow_run.get_id() or f"local-{int(time.time() * 1000)}")


@contextmanager
def tracked_run(home: Path, run_id: str, flow: str, warn: Callable[[str], object]) -> Iterator[None]:
    """What every flow does around its work: mark this machine's killed runs crashed (each said
    through `warn`), then record this run as in progress for the life of the block."""
    for crashed in mark_crashed(home):
        warn(f"run {crashed} was killed before it finished: marked crashed")
    with active_run(home, run_id, flow):
        yield


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


def any_recorded(home: Path) -> bool:
    """Whether a run is in progress here or was killed before it finished (read only)."""
    return any(_dir(home).glob("*.json"))


def crashed_runs(home: Path) -> list[dict]:
    """Records of runs on this host whose process is gone (their files are removed)."""
    found = []
    for record in sorted(_dir(home).glob("*.json")):
        try:
            info = json.loads(record.read_text())
        except (OSError, ValueError):
            record.unlink(missing_ok=True)
            continue
        if info.get("host") != socket.gethostname():
            continue  # another machine's run: only that machine can tell
        if _started(int(info["pid"])) == info.get("started") and info.get("started") is not None:
            continue  # still running
        record.unlink(missing_ok=True)
        found.append(info)
    return found


def mark_crashed(home: Path) -> list[str]:
    """Mark the flow runs of dead processes Crashed on the Prefect server; their run ids."""
    runs = crashed_runs(home)
    for info in runs:
        _set_crashed(info)
    return [r["run_id"] for r in runs]


def _set_crashed(info: dict) -> None:
    from uuid import UUID

    try:
        flow_run_id = UUID(info["run_id"])
    except ValueError:
        return  # a run without a server (local id): nothing to mark
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    message = (f"process {info['pid']} on {info['host']} ended without finishing the run "
               "(killed); marked crashed by the next run on that machine")
    with suppress(Exception), get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
        if state is not None and not state.is_final():
            client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
            log.warning("flow run %s (%s) was left running by a killed process: marked crashed",
                        info["run_id"], info.get("flow"))
