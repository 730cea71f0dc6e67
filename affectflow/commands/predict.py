"""`affectflow predict VIDEO|FOLDER`: run the predict flow here, without a server."""

from __future__ import annotations

import argparse
import json

from affectflow.commands._common import fail, parameter_error
from tasks.errors import SetupError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="predict emotions, stress and valence-arousal on new videos",
        description="Extract features from a video, image, folder or glob with the checkpoint's own "
        "extractor, predict per frame (sliding window) and per window, and write the predictions "
        "table, CSV/Parquet files and four plots per video (timeline, distribution, circumplex, "
        "stress) into the output folder.")
    p.add_argument("source", metavar="VIDEO|FOLDER", help="a video, an image, a folder (recursive) or a glob")
    p.add_argument("--run-id", default="latest", help="training run whose checkpoint predicts (default: latest)")
    p.add_argument("--checkpoint", help="a checkpoint file (model.pt) instead of a run id")
    p.add_argument("--out", help="output folder (default: $AFFECTFLOW_HOME/predictions)")
    p.add_argument("--fps", type=float, help="predict on at most this many frames per second")
    p.add_argument("--max-frames", type=int, help="stop each video after this many frames")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from affectflow import preflight

    try:  # before Prefect and torch are imported: a mistyped path answers at once, with no flow run
        preflight.check_source(args.source)
        preflight.check_file("checkpoint", args.checkpoint)
        preflight.check_server()
    except preflight.PreflightError as exc:
        return fail(str(exc))
    from flows.predict import PredictParams, predict, prepare

    try:
        params = PredictParams(source=args.source, run_id=args.run_id, checkpoint=args.checkpoint,
                               out=args.out, fps=args.fps, max_frames=args.max_frames)
    except ValueError as exc:
        return fail(f"bad parameters: {parameter_error(exc) or exc}")
    try:
        prepare(params)  # refuse a bad checkpoint or output folder before a flow run starts
        summary = predict(params)
    except (SetupError, OSError) as exc:
        return fail(str(exc))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(f"model {summary['run_id']} ({summary['extractor']}); summary {summary['summary_csv']}")
        for item in summary["items"]:
            print(f"  {item['message']}")
    failed = [i for i in summary["items"] if i["status"] == "failed"]
    return 1 if failed else 0
