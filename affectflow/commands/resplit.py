"""`affectflow resplit`: run the resplit flow here (the same flow `resplit/nightly` runs)."""

from __future__ import annotations

import argparse
import json
import os

from affectflow.commands._common import fail


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "resplit", help="make a new stratified, contract-checked split version",
        description="Split the warehouse's units into a test holdout of whole videos (or subjects) "
        "and pretrain / ssl / classifier / finetune, check the split contract and publish the version. "
        "Unchanged data and parameters write nothing; a failing contract keeps the previous split "
        "current and says which option to change.")
    p.add_argument("--strategy", choices=("grouped", "row"), default="grouped",
                   help="grouped: whole videos (or subjects); row: each frame row, as the research code "
                   "(after a test holdout of whole videos)")
    p.add_argument("--mode", choices=("stable", "reshuffle"), default="stable",
                   help="stable: keep earlier assignments; reshuffle: fresh split, new seed, same test holdout")
    p.add_argument("--seed", type=int, help="default: the current split's seed (stable), +1 (reshuffle), 42 first")
    p.add_argument("--group-by", choices=("video", "subject"), default="video",
                   help="grouped: keep each video, or all of a subject's videos, on one side (the unit stays the video)")
    p.add_argument("--pretrain-fraction", type=float, default=0.7, help="unlabelled share of each class")
    p.add_argument("--ssl-fraction", type=float, default=0.7, help="ssl share of the labelled part")
    p.add_argument("--classifier-fraction", type=float, default=0.2, help="classifier share of the labelled part")
    p.add_argument("--finetune-fraction", type=float, default=0.1, help="finetune share of the labelled part")
    p.add_argument("--test-fraction", type=float, help="test holdout share (default: the current split's, "
                   "0.15 for a first split; 0 with --strategy row: the research code's split exactly, no test metrics)")
    p.add_argument("--class-order", help="comma-separated class order for the row strategy "
                   "(default angry,sad,happy,neutral)")
    p.add_argument("--dry-run", action="store_true", help="compute and check the split, write nothing")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(handler=run)


def _params(args: argparse.Namespace) -> dict:
    params = {"strategy": args.strategy, "mode": args.mode, "seed": args.seed, "group_by": args.group_by,
              "pretrain_fraction": args.pretrain_fraction, "ssl_fraction": args.ssl_fraction,
              "classifier_fraction": args.classifier_fraction, "finetune_fraction": args.finetune_fraction,
              "test_fraction": args.test_fraction, "dry_run": args.dry_run}
    if args.class_order:
        params["class_order"] = [c.strip() for c in args.class_order.split(",") if c.strip()]
    return params


def _validation_message(exc) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(map(str, error["loc"]))
        parts.append((f"{where}: " if where else "") + error["msg"].removeprefix("Value error, "))
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    if not args.verbose:
        # the outcome is printed below in one line; Prefect's run logs and tracebacks are for -v
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    from pydantic import ValidationError

    from flows.resplit import ResplitParams, resplit
    from tasks.errors import TransientError
    from tasks.publish_split import SplitRejected
    from tasks.split import SplitError

    try:
        params = ResplitParams(**_params(args))
    except ValidationError as exc:
        return fail(f"bad parameters: {_validation_message(exc)}")
    try:
        result = resplit(params)
    except (SplitError, SplitRejected, TransientError) as exc:
        return fail(str(exc), code=1)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(result["message"])
    if result["split_id"] and result["status"] != "dry-run":
        print(f"see the counts: affectflow splits --split-id {result['split_id']}")
    return 0
