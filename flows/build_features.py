"""Flow `build-features`: media -> validated per-frame features in the warehouse.

The run plans first (`tasks.plan`: one `stat` per file; files read only when new or changed),
then fans units of work out over the task runner: one task run per video, one per shard of
images or OpenFace CSVs, retries for transient errors only. Bad files are quarantined and the
run goes on; an item that still fails after its retries is recorded as failed and the run ends
with the rest done. The summary says what each file became.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.states import Failed

from affectflow.forms import apply_form_schema
from affectflow.settings import load_settings
from flows import flow
from flows.build_params import (
    ExtractorName,
    Fps,
    MaxFrames,
    MinConfidence,
    NumFaces,
    Source,
    TaskRunnerName,
    Workers,
)
from tasks import extract_ahead
from tasks.build_plan import early_results, prepare, run_summary, summary_line, unchanged
from tasks.errors import SetupError, TransientError
from tasks.extract import BuildContext, ItemResult, close_extractors, process_unit
from tasks.extractors import CHOICES
from tasks.extractors.base import ExtractOptions
from tasks.faults import failpoint
from tasks.labels import Manifest
from tasks.load import (
    link_duplicate,
    now,
    quarantine_item,
    record_run,
    record_stats,
    relabel,
    release,
    relink,
    sweep_orphans,
    unlink_duplicate,
)
from tasks.media import display_path
from tasks.plan import Plan, Unit
from tasks.progress import progress_bar
from tasks.run_registry import current_run_id, tracked_run
from tasks.validate import preload as preload_validation
from warehouse import Warehouse
from warehouse.catalog import refresh_catalog
from warehouse.storage import StorageError

assert set(ExtractorName.__args__) == set(CHOICES)  # type: ignore[attr-defined]
RETRIES = 2


def _task_name() -> str:
    from prefect.runtime import task_run

    unit = task_run.parameters.get("unit")
    return f"extract {unit.name}" if unit else "extract"


def _retry_transient(task, task_run, state) -> bool:
    try:
        state.result()
    except TransientError:
        return True
    except Exception:
        return False
    return False


@task(name="extract-unit", retries=RETRIES, retry_delay_seconds=[2, 10], retry_condition_fn=_retry_transient,
      cache_policy=NO_CACHE, task_run_name=lambda: _task_name())
def extract_unit(unit: Unit, ctx: BuildContext) -> list[dict[str, Any]]:
    """One video, or one shard of small items, into the warehouse (`tasks.extract.process_unit`)."""
    return process_unit(unit, ctx)


def _task_runner(kind: str, workers: int, dask_address: str | None):
    """The task runner that fans units out: threads (default), processes, or Dask (an existing
    scheduler at `dask_address`, or a local cluster of `workers` single-threaded processes)."""
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "process":
        return ProcessPoolTaskRunner(max_workers=workers)
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


def _run_units(units: list[Unit], ctx: BuildContext, workers: int, runner, total: int) -> list[dict]:
    """Submit one task per unit, at most `workers` in flight, updating a progress artifact
    (and a progress bar when the CLI runs on a terminal)."""
    if not units:
        return []
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, description=f"build-features: {total} files")
    results: list[dict] = []
    pending = list(units)
    running: dict = {}  # future -> unit (a failed future's own task_run is not always there)
    done = 0

    def fill() -> None:
        while pending and len(running) < workers:
            unit = pending.pop(0)
            running[runner.submit(extract_unit, parameters={"unit": unit, "ctx": ctx})] = unit

    with runner, progress_bar(total, "build-features", unit="items") as bar:
        fill()
        while running:
            future = next(as_completed(list(running)))
            unit = running.pop(future)
            rows = _results_of(future, unit)  # (a warehouse that cannot be written stops here)
            fill()  # the next unit starts before this one's logs and progress go to the API
            results += rows
            done += len(unit.members)
            bar.advance(len(unit.members))
            for r in rows if len(rows) <= 3 else ():
                logger.info("%s %s: %s", r["status"], Path(r["path"]).name, r["reason"] or f"{r['frames']} frames")
            if len(rows) > 3:
                counts = Counter(r["status"] for r in rows)
                logger.info("%s: %s", unit.name, ", ".join(f"{n} {s}" for s, n in counts.most_common()))
            if progress:
                update_progress_artifact(progress, 100.0 * done / total)  # type: ignore[arg-type]
    return results


def _ahead_first(units: list[Unit]) -> list[Unit]:
    """The video whose extraction the CLI started while Prefect loaded goes first."""
    if not extract_ahead.pending():
        return units
    return sorted(units, key=lambda u: u.sharded or not extract_ahead.started(u.members[0].item.path))


def _results_of(future, unit: Unit) -> list[dict]:
    """A unit that still failed after its retries: each member is recorded as failed, with the
    reason, so the run finishes and says so (the next run tries them again)."""
    try:
        return future.result()
    except StorageError:
        raise  # the warehouse cannot be written: the run stops, saying where and why
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = f"failed after {RETRIES + 1} attempts: {first}"
        return [ItemResult(display_path(m.item.path), "failed", m.source_id, stage="failed", reason=reason,
                           kind=m.item.kind).to_dict() for m in unit.members]


def _apply_early(wh: Warehouse, plan: Plan, run_id: str, cache_keys: dict[str, str], routes: dict[str, str],
                 source_root: Path | None) -> list[dict]:
    """What the plan settles without extraction: bad files, links, moves, relabels, drops."""
    for e in plan.early:
        if e.status == "quarantined" and e.record:
            key = cache_keys.get(routes.get(e.kind or "", ""))
            quarantine_item(wh, e.path, e.stage or "extract", e.reason or "", run_id, e.source_id, e.stat, key,
                            source_root)
    for link in plan.links:
        link_duplicate(wh, link.path, link.source_id, link.same_as, link.stat.bytes, link.stat.mtime_ns, run_id,
                       link.label_conflict)
    for held, path, label in plan.relinks:
        st = path.stat()
        relink(wh, held.key, held.source_id, path, st.st_size, st.st_mtime_ns, label)
    for held, label in plan.relabels:
        relabel(wh, held.key, held.source_id, label)
    by_key: dict[str, dict[str, tuple[int, int]]] = {}
    for held, stat in plan.restats:
        by_key.setdefault(held.key, {})[held.source_id] = (stat.bytes, stat.mtime_ns)
    for key, stats in by_key.items():
        record_stats(wh, key, stats)
    for path in plan.unlink:
        unlink_duplicate(wh, path)
    release(wh, plan.drops, plan.promotions)
    return early_results(plan)


def _settle_failed(wh: Warehouse, plan: Plan, results: list[dict], run_id: str, source_root: Path | None) -> None:
    failed = {r["source_id"] for r in results if r["status"] == "failed"}
    for unit in plan.units:
        for m in unit.members:
            if m.source_id in failed:
                quarantine_item(wh, m.item.path, "failed", next(r["reason"] for r in results
                                if r["source_id"] == m.source_id), run_id, m.source_id, source_root=source_root)
                release(wh, list(m.replaces), list(m.promote))


@flow(name="build-features", log_prints=True, validate_parameters=True)
def build_features(
    source: Source,
    labels: str | None = None,
    extractor: ExtractorName = "auto",
    fps: Fps = None,
    max_frames: MaxFrames = None,
    min_confidence: MinConfidence = 0.7,
    num_faces: NumFaces = 1,
    workers: Workers = 2,
    task_runner: TaskRunnerName = "thread",
    dask_address: str | None = None,
    force: bool = False,
    relabel: bool = False,
) -> dict[str, Any]:
    """Extract per-frame features from media into the warehouse (the deployment's run form
    shows these descriptions; Prefect reads them from this docstring).

    Args:
        source: Required. A file, folder (searched recursively) or glob of videos, images or OpenFace CSVs; the path must exist on the machine where the deployment is served, e.g. /data/videos or /data/clips/*.mp4
        labels: Optional CSV manifest (columns path, emotion, subject_id, valence, arousal, stress; paths relative to it) on the serving machine, e.g. /data/labels.csv; empty: labels from folder and file names
        extractor: Which extractor reads the media; auto: openface-csv for CSVs and, for videos and images, pyfeat when its weights are installed, else mediapipe; e.g. mediapipe
        fps: Keep at most this many frames per second of each video (frames/s, 0 < fps <= 240), e.g. 10; empty: every frame
        max_frames: Stop each video after this many frames (frames, >= 1), e.g. 300; empty: the whole video
        min_confidence: OpenFace rows whose face confidence (0-1) is below this are blanked, e.g. 0.7
        num_faces: Most faces tracked per frame by MediaPipe and py-feat (faces, 1-16), e.g. 5 for group photos
        workers: Units of work (one video, or one shard of images or CSVs) extracted at once (1-64), e.g. 2
        task_runner: How units fan out: thread, process, or dask (a local cluster, or dask_address), e.g. thread
        dask_address: An existing Dask scheduler to send units to (with task_runner dask), e.g. tcp://10.0.0.5:8786; empty: a local cluster
        force: Re-extract items already in the warehouse with the same content and settings, e.g. false
        relabel: Reset every label to what this run's sources say (manifest, folder and file names), including labels an earlier manifest gave, e.g. false
    """
    started_at, t0 = now(), time.perf_counter()
    run_id = current_run_id()
    settings = load_settings()
    try:
        wh = Warehouse(settings.home).init()
    except StorageError as exc:
        get_run_logger().error("%s", exc)
        return Failed(message=str(exc))  # type: ignore[return-value]
    with tracked_run(settings.home, run_id, "build-features", get_run_logger().warning):
        try:
            summary = _build(source, labels, extractor, ExtractOptions(fps=fps, max_frames=max_frames,
                             min_confidence=min_confidence), num_faces, workers, task_runner, dask_address, force,
                             relabel, run_id, wh, t0)
        except (SetupError, StorageError) as exc:  # one line, as the run's state message; no traceback
            get_run_logger().error("%s", exc)
            return Failed(message=str(exc))  # type: ignore[return-value]
        params = {"source": source, "labels": labels, "extractor": extractor, "fps": fps, "max_frames": max_frames,
                  "min_confidence": min_confidence, "num_faces": num_faces, "force": force, "relabel": relabel,
                  "task_runner": task_runner, "dask_address": dask_address}
        _finish(wh, summary, params, started_at)
    return summary


def _build(source: str, labels: str | None, extractor: str, options: ExtractOptions, num_faces: int, workers: int,
           task_runner: str, dask_address: str | None, force: bool, relabel_all: bool, run_id: str,
           wh: Warehouse, t0: float) -> dict[str, Any]:
    logger = get_run_logger()
    settings = load_settings()
    removed = sweep_orphans(wh)
    if removed:
        logger.warning("removed %d leftovers of an interrupted run", removed)
    p = prepare(wh, settings, source, labels, extractor, options, num_faces, workers, force, relabel_all, run_id)
    bad_rows = _manifest_problems(wh, p.manifest, run_id)
    logger.info("%d files from %s: %s", len(p.items), source,
                ", ".join(f"{k} -> {v}" for k, v in sorted(p.routes.items()) if any(i.kind == k for i in p.items)))
    if p.ignored:
        logger.warning("ignored %d files no chosen extractor reads, e.g. %s", len(p.ignored), ", ".join(p.ignored[:3]))
    plan = p.plan
    logger.info("plan: %d to extract in %d units, %d unchanged", plan.members, len(plan.units), len(plan.early))
    changed = not unchanged(p)
    results = bad_rows + _apply_early(wh, plan, run_id, p.inputs.cache_keys, p.routes, p.ctx.source_root)
    if plan.units:
        preload_validation()  # Great Expectations loads while the first frames are extracted
    try:
        results += _run_units(_ahead_first(plan.units), p.ctx, workers,
                              _task_runner(task_runner, workers, dask_address), plan.members)
    finally:
        extract_ahead.discard()
        close_extractors()
    _settle_failed(wh, plan, results, run_id, p.ctx.source_root)
    _quarantine_artifact(results)
    _items_artifact(results)
    failpoint("flow-end")
    return {"run_id": run_id, "extractor": p.extractor,
            **run_summary(results, time.perf_counter() - t0, p.ignored), "warehouse_changed": changed, "flow_run": True}


def _manifest_problems(wh: Warehouse, manifest: Manifest | None, run_id: str) -> list[dict]:
    rows = []
    for path, reason in manifest.problems if manifest else []:
        quarantine_item(wh, path, "label", reason, run_id)
        rows.append(ItemResult(display_path(path), "quarantined", stage="label", reason=reason).to_dict())
    return rows


def _finish(wh: Warehouse, summary: dict, params: dict, started_at) -> None:
    logger = get_run_logger()
    record_run(wh, {
        "run_id": summary["run_id"], "flow": "build-features",
        "status": "failed" if summary["failed"] else "completed",
        "started_at": started_at, "finished_at": now(), "params": json.dumps(params),
        "extractor": summary["extractor"], "items": summary["items"], "loaded": summary["loaded"],
        "skipped": summary["skipped"], "quarantined": summary["quarantined"], "failed": summary["failed"],
        "duplicates": summary["duplicates"], "frames": summary["frames"],
        "face_rate": summary["face_rate"], "frames_per_s": summary["frames_per_s"],
    })
    create_table_artifact(
        key="build-features-summary",
        table=[{k: v for k, v in summary.items()
                if k not in ("quarantine_reasons", "partial", "ignored_examples", "warehouse_changed", "flow_run")}],
        description="build-features summary",
    )
    if summary["warehouse_changed"] or not wh.catalog_path.exists():  # a no-op re-run costs no more
        _publish(wh)
    logger.info("done: %s", summary_line(summary))
    for reason, count in summary["quarantine_reasons"].items():
        logger.warning("quarantined %d item(s): %s", count, reason)


def _publish(wh: Warehouse) -> None:
    """The snapshot and catalog views (the cost follows what changed). The whole-warehouse report
    is `affectflow report` (and the train flow's artifact): rebuilding it after every build would
    cost more than a small build itself."""
    if not refresh_catalog(wh):
        get_run_logger().warning("catalog %s is held open by another process; its views were left as they were "
                                 "(they read the Parquet files, so new data is still visible)", wh.catalog_path)


ITEMS_SHOWN = 200  # above this many files, the items artifact groups them by folder


def _items_artifact(results: list[dict]) -> None:
    """What each file gave (or, for big runs, each folder): status, frames, faces, reason."""
    if not results:
        return
    if len(results) <= ITEMS_SHOWN:
        rows = [{"file": Path(r["path"]).name, "status": r["status"], "frames": r["frames"],
                 "face rate": round(r["face_frames"] / r["frames"], 3) if r["frames"] else None,
                 "note": r["reason"] or ""} for r in results]
    else:
        groups: dict[str, Counter] = {}
        for r in results:
            counts = groups.setdefault(str(Path(r["path"]).parent), Counter())
            counts[r["status"]] += 1
            counts["frames"] += r["frames"]
            counts["faces"] += r["face_frames"]
        rows = [{"folder": folder, "files": sum(c[s] for s in STATUSES), **{s: c[s] for s in STATUSES},
                 "frames": c["frames"], "face rate": round(c["faces"] / c["frames"], 3) if c["frames"] else None}
                for folder, c in sorted(groups.items())]
    create_table_artifact(key="build-features-items", table=rows, description="what each file of this run gave")


STATUSES = ("loaded", "skipped", "duplicate", "quarantined", "failed")


def _quarantine_artifact(results: list[dict]) -> None:
    bad = [r for r in results if r["status"] in ("quarantined", "failed")]
    if bad:
        create_table_artifact(key="build-features-quarantine",
                              table=[{"path": r["path"], "stage": r["stage"], "reason": r["reason"]} for r in bad],
                              description="items quarantined in this run")


def deployment():
    return apply_form_schema(build_features.to_deployment(
        name="default",
        description="Extract per-frame affect features from a folder of media into the warehouse.",
        tags=["affectflow"],
        enforce_parameter_schema=True,
    ))


__all__ = ["SetupError", "build_features", "deployment"]
