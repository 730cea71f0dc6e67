"""`affectflow serve`: serve every affectflow deployment from this process."""

from __future__ import annotations

import argparse
import importlib

FLOW_MODULES = ("flows.build_features", "flows.resplit", "flows.train", "flows.predict")


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
        "serve", help="serve the deployments (build-features/default, resplit/nightly, train/default)",
        description="Register and serve every affectflow deployment against the Prefect server in "
        "PREFECT_API_URL; runs started from the UI or `prefect deployment run` execute here. "
        "Restarting it updates the deployments in place (no duplicate schedules).")
    p.add_argument("--limit", type=int, default=None, help="most flow runs at once")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from prefect import serve
    from prefect.settings import PREFECT_API_URL

    found = deployments()
    names = ", ".join(f"{d.flow_name}/{d.name}" for d in found)
    print(f"serving {names} against {PREFECT_API_URL.value() or 'a temporary local server'}", flush=True)
    serve(*found, limit=args.limit, print_starting_message=False)
    return 0
