"""`affectflow serve`: serve every affectflow deployment from this process.

Stopping is bounded. Prefect's own `serve()` handles SIGTERM by calling the runner's async stop
from a synchronous signal handler (the coroutine is never awaited) and then pauses every
deployment through the API, retrying for minutes when the server is already gone — so
`make stop`, which stops the server too, left `serve` running. Here SIGTERM and Ctrl-C stop the
runner's loops on its own event loop, the shutdown calls to the API get `API_SHUTDOWN_S`, and a
watchdog ends the process `SHUTDOWN_GRACE_S` after the signal whatever is still waiting.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import time

FLOW_MODULES = ("flows.build_features", "flows.resplit", "flows.train", "flows.predict")
API_SHUTDOWN_S = 3.0  # pausing the schedules on the way out: one bounded try
SHUTDOWN_GRACE_S = 10.0  # from the signal to the process's end, at most



def deployments() -> list:
    """`deployment()` of each flow module present in this build."""
    found = []
    for name in FLOW_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        found.append(module.deployment())
    return found


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="serve the deployments (build-features/default, resplit/nightly, train/default, "
        "predict/default)",
        description="Register and serve every affectflow deployment (build-features/default, "
        "resplit/nightly, train/default, predict/default) against the Prefect server in "
        "PREFECT_API_URL; runs started from the UI or `prefect deployment run` execute here. "
        "Restarting it updates the deployments in place (no duplicate schedules). SIGTERM or "
        f"Ctrl-C stops it within {SHUTDOWN_GRACE_S:.0f} s, whether or not the server still answers.")
    p.add_argument("--limit", type=int, default=None, help="most flow runs at once")
    p.set_defaults(handler=run)


def _runner_class():
    import asyncio

    from prefect.runner import Runner

    class BoundedRunner(Runner):
        """A runner whose signal handling stops it on its own loop, with bounded API calls."""

        def handle_sigterm(self, *args) -> None:  # installed by Runner.start() for SIGTERM
            request_stop(self, "SIGTERM")

        async def _pause_schedules(self) -> None:
            try:
                await asyncio.wait_for(super()._pause_schedules(), API_SHUTDOWN_S)
            except Exception as exc:  # the server may be gone already (TimeoutError, connection errors)
                print(f"schedules left as they were: the Prefect server did not answer "
                      f"({type(exc).__name__})", flush=True)

    return BoundedRunner


_stopping = threading.Event()


def _watchdog() -> None:
    time.sleep(SHUTDOWN_GRACE_S)
    print(f"affectflow serve: shutdown took over {SHUTDOWN_GRACE_S:.0f} s; exiting now", flush=True)
    os._exit(1)


def request_stop(runner, why: str) -> None:
    """First signal: stop the runner's loops (on its event loop) and arm the watchdog; a second
    signal exits at once."""
    if _stopping.is_set():
        print(f"affectflow serve: {why} again; exiting now", flush=True)
        os._exit(1)
    _stopping.set()
    print(f"affectflow serve: {why} received, stopping", flush=True)
    threading.Thread(target=_watchdog, name="affectflow-serve-watchdog", daemon=True).start()
    loop = getattr(runner, "_loop", None)
    if loop is None or not runner.started:  # still registering deployments: nothing to stop yet
        print("affectflow serve: stopped before serving", flush=True)
        os._exit(0)
    loop.call_soon_threadsafe(lambda: loop.create_task(_stop(runner)))


async def _stop(runner) -> None:
    try:
        await runner.astop()
    except RuntimeError:  # not started yet: nothing to stop but the process
        os._exit(0)


READY = "affectflow serve: ready"  # scripts/services.sh waits for this line


def run(args: argparse.Namespace) -> int:
    import asyncio  # here, not at the top: every `affectflow` command imports this module

    from prefect.settings import PREFECT_API_URL

    runner = _runner_class()(limit=args.limit, pause_on_shutdown=True)
    # From here on SIGTERM and Ctrl-C take the bounded path (before the runner starts they just
    # end the process); Runner.start() re-installs SIGTERM as `handle_sigterm`, the same path.
    for signum, why in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "interrupt")):
        signal.signal(signum, lambda *_, why=why: request_stop(runner, why))
    found = deployments()
    names = ", ".join(f"{d.flow_name}/{d.name}" for d in found)
    print(f"serving {names} against {PREFECT_API_URL.value() or 'a temporary local server'}", flush=True)
    for deployment in found:
        runner.add_deployment(deployment)
    asyncio.run(_serve(runner))
    print("affectflow serve: stopped", flush=True)
    # Tearing down the interpreter after this (torch, MediaPipe and friends' native finalisers)
    # takes ~4 s on 2 cores and does nothing a served process needs: logs are flushed, the
    # runner has stopped. Exit now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


async def _serve(runner) -> None:
    import asyncio

    started = asyncio.create_task(runner.start())
    while not runner.started and not started.done():
        await asyncio.sleep(0.1)
    if runner.started:
        print(READY, flush=True)
    await started
