"""`affectflow build-features SOURCE`: run the build-features flow here, without a server."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from affectflow.commands._common import fail, parameter_error
from tasks.errors import SetupError

if TYPE_CHECKING:
    from tasks.plan import NeedsReading


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "build-features", help="extract per-frame features from media into the warehouse",
        description="Extract per-frame features (landmarks, pose, gaze, AUs, emotions) from a file, "
        "folder or glob of videos/images/OpenFace CSVs, validate them and load them into the "
        "warehouse. Items already loaded with the same settings are skipped.")
    p.add_argument("source", help="file, folder (recursive) or glob")
    p.add_argument("--labels", help="CSV manifest: path, emotion, subject_id, valence, arousal, stress")
    p.add_argument("--extractor", default=None, help="auto | mediapipe | openface-csv | openface | pyfeat (default: $AFFECTFLOW_EXTRACTOR or "
                   "auto: openface-csv for CSVs, pyfeat when its weights are installed, else mediapipe; "
                   "openface runs OpenFace's FeatureExtraction: $OPENFACE_BIN or on PATH)")
    p.add_argument("--fps", type=float, help="keep at most this many frames per second")
    p.add_argument("--max-frames", type=int, help="stop each video after this many frames")
    p.add_argument("--min-confidence", type=float, default=None, help="OpenFace confidence threshold (default 0.7)")
    p.add_argument("--num-faces", type=int, default=1, help="faces per frame (MediaPipe)")
    p.add_argument("--workers", type=int, default=2, help="items extracted at once")
    p.add_argument("--force", action="store_true", help="re-extract items already loaded")
    p.add_argument("--relabel", action="store_true", help="reset every label to what this run's sources say "
                   "(manifest, folder and file names), including labels an earlier manifest gave; without it "
                   "a label from an earlier manifest stays")
    p.add_argument("--task-runner", choices=("thread", "process", "dask"), default="thread",
                   help="how items fan out: threads, processes, or a Dask cluster (default thread)")
    p.add_argument("--dask-address", help="an existing Dask scheduler (default: start a local cluster)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from affectflow import preflight
    from affectflow.settings import load_settings

    settings = load_settings()
    extractor = args.extractor or settings.extractor
    try:  # before Prefect is imported: a mistake answers at once and leaves no flow run behind
        preflight.check_source(args.source)
        preflight.check_manifest(args.labels)
        preflight.check_extractor(extractor, args.source)
        preflight.check_server()
    except preflight.PreflightError as exc:
        return fail(str(exc))
    except ValueError as exc:  # an AFFECTFLOW_* setting that does not parse
        return fail(str(exc))
    params = {"source": args.source, "labels": args.labels, "extractor": extractor,
              "fps": args.fps, "max_frames": args.max_frames,
              "min_confidence": settings.min_confidence if args.min_confidence is None else args.min_confidence,
              "num_faces": args.num_faces, "workers": args.workers, "force": args.force, "relabel": args.relabel,
              "task_runner": args.task_runner, "dask_address": args.dask_address}
    return _run_flow(params, args.json)


def _run_flow(params: dict, as_json: bool) -> int:
    from pydantic import ValidationError

    from flows.build_params import BuildParams

    try:  # bad values: refused without a flow run, before Prefect loads
        BuildParams.model_validate(params)
    except ValidationError as exc:
        return fail(f"bad parameters: {parameter_error(exc) or exc}")
    summary, first = _nothing_to_do(params)
    if summary is not None:  # answered without Prefect: a no-op re-run costs what the plan does
        print_summary(summary, as_json=as_json)
        return 0
    from tasks import extract_ahead
    from tasks.validate import preload

    preload()  # there is work: Great Expectations loads in its own process while Prefect loads here
    try:
        _start_ahead(params, first)  # and the first new video's extraction in a thread here
        from prefect.exceptions import FailedRun

        from flows.build_features import build_features

        try:
            summary = build_features(**params)
        except FailedRun as exc:  # the run stopped with a reason (its Prefect state message)
            return fail(str(exc), 1)
        except (SetupError, ValueError, OSError) as exc:
            return fail(parameter_error(exc) or str(exc), 1)
    finally:
        extract_ahead.discard()  # one the run did not claim (or a run that never started)
    print_summary(summary, as_json=as_json)
    if summary.get("failed"):
        print(f"affectflow: error: {summary['failed']} item(s) still failed after their retries "
              "(see the quarantine table, stage 'failed'); run again to retry them", file=sys.stderr)
        return 1
    return 0


def _start_ahead(params: dict, first: NeedsReading | None) -> None:
    """The first file to read, when it is a video and units run in threads of this process:
    its extraction starts now, while Prefect loads (`tasks.extract_ahead`)."""
    if first is None or first.item.kind != "video" or params["task_runner"] != "thread":
        return
    from tasks import extract_ahead
    from tasks.build_plan import extractor_options
    from tasks.extractors.base import ExtractOptions

    options = ExtractOptions(fps=params["fps"], max_frames=params["max_frames"],
                             min_confidence=params["min_confidence"])
    extract_ahead.start(first.item, first.extractor, extractor_options(first.extractor, params["num_faces"]), options)


def _nothing_to_do(params: dict) -> tuple[dict | None, NeedsReading | None]:
    """The summary of a re-run that would change nothing (every file unchanged, the manifest
    clean, no interrupted run to settle), planned without a flow run; None when there is work,
    or anything to report that the flow handles (it plans again, and writes). Beside it, the
    first new or changed file the plan met, when that is why there is work."""
    if params["force"]:
        return None, None
    import time

    from affectflow.settings import load_settings
    from tasks.build_plan import early_results, prepare, run_summary, unchanged
    from tasks.extractors.base import ExtractOptions
    from tasks.plan import NeedsReading
    from tasks.run_registry import any_recorded
    from warehouse import Warehouse

    t0 = time.perf_counter()
    try:
        settings = load_settings()
        wh = Warehouse(settings.home)
        if any_recorded(settings.home):  # the flow settles those
            return None, None
        options = ExtractOptions(fps=params["fps"], max_frames=params["max_frames"],
                                 min_confidence=params["min_confidence"])
        p = prepare(wh, settings, params["source"], params["labels"], params["extractor"], options,
                    params["num_faces"], params["workers"], False, params["relabel"], "check", stat_only=True)
    except NeedsReading as first:  # a new or changed file: the flow reads it (once; this check hashes nothing)
        return None, first
    except Exception:  # the flow run reports it, with its reason
        return None, None
    if not wh.catalog_path.exists() or not unchanged(p):
        return None, None
    summary = run_summary(early_results(p.plan), time.perf_counter() - t0, p.ignored)
    return {"run_id": None, "extractor": p.extractor, **summary, "warehouse_changed": False,
            "flow_run": False}, None


def print_summary(summary: dict, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    from tasks.build_plan import summary_line

    print(f"build-features ({summary['extractor']}): {summary_line(summary)}")
    for reason, count in summary.get("quarantine_reasons", {}).items():
        print(f"  quarantined {count}: {reason}")
    for partial in summary.get("partial", []):
        print(f"  partial: {partial['path']}: {partial['note']}")
    if summary.get("ignored"):
        print(f"  ignored {summary['ignored']} files no chosen extractor reads, e.g. "
              f"{', '.join(summary['ignored_examples'][:3])}")
