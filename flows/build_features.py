"""Flow `build-features`: media -> validated per-frame features in the warehouse.

One task run per media item (bounded concurrency), retries for transient errors only; an item
already loaded with the same content hash + extractor config + contract version is skipped (the
warehouse is the cache, so deleting it never serves stale results). Bad items are quarantined
and the run goes on; the run's summary says how many and why.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run
from pydantic import Field

from affectflow.settings import load_settings
from data_contracts import load_emotion_map
from tasks.errors import SetupError, TransientError
from tasks.extract import BuildContext, ItemResult, process_item
from tasks.extractors import CHOICES, get_extractor, kinds_for, resolve_auto
from tasks.extractors.base import ExtractOptions
from tasks.faults import failpoint
from tasks.labels import Manifest, read_manifest
from tasks.load import now, quarantine_item, record_run, sweep_orphans
from tasks.media import MediaItem, discover_media, display_path, source_base
from tasks.progress import progress_bar
from warehouse import Warehouse
from warehouse.catalog import refresh_catalog

ExtractorName = Literal["auto", "mediapipe", "openface-csv", "pyfeat"]
TaskRunnerName = Literal["thread", "process", "dask"]
assert set(ExtractorName.__args__) == set(CHOICES)  # type: ignore[attr-defined]


def _task_name() -> str:
    from prefect.runtime import task_run

    item = task_run.parameters.get("item")
    return f"extract {display_path(item.path).rsplit('/', 1)[-1]}" if item else "extract"


def _retry_transient(task, task_run, state) -> bool:
    try:
        state.result()
    except TransientError:
        return True
    except Exception:
        return False
    return False


@task(name="extract-item", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_retry_transient,
      cache_policy=NO_CACHE, task_run_name=lambda: _task_name())
def extract_item(item: MediaItem, ctx: BuildContext) -> dict[str, Any]:
    """One media item into the warehouse (see `tasks.extract.process_item`)."""
    return process_item(item, ctx).to_dict()


def _context(source: str, labels: str | None, extractor: str, options: ExtractOptions,
             num_faces: int, force: bool, run_id: str) -> BuildContext:
    settings = load_settings()
    emotions = load_emotion_map(settings.emotion_map)
    manifest = read_manifest(Path(labels).expanduser().absolute(), emotions, source_base(source)) if labels else None
    root = Path(source).expanduser().absolute()
    extra = {"num_faces": num_faces} if extractor in ("mediapipe", "pyfeat") else {}
    return BuildContext(settings.home, extractor, extra, options, root if root.is_dir() else None,
                        emotions, manifest, run_id, force)


def _summary(results: list[dict], seconds: float) -> dict[str, Any]:
    status = Counter(r["status"] for r in results)
    frames = sum(r["frames"] for r in results)
    faces = sum(r["face_frames"] for r in results)
    reasons = Counter(r["reason"] for r in results if r["status"] == "quarantined")
    return {
        "items": len(results), "loaded": status["loaded"], "skipped": status["skipped"],
        "quarantined": status["quarantined"], "frames": frames,
        "face_rate": round(faces / frames, 4) if frames else None,
        "frames_per_s": round(frames / seconds, 2) if frames and seconds > 0 else None,
        "seconds": round(seconds, 2), "quarantine_reasons": dict(reasons.most_common(10)),
    }


def _task_runner(kind: str, workers: int, dask_address: str | None):
    """The task runner that fans items out: threads (default), processes, or Dask (an existing
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


def _run_items(items: list[MediaItem], ctx: BuildContext, workers: int, runner) -> list[dict]:
    """Submit one task per item, at most `workers` in flight, updating a progress artifact
    (and a progress bar when the CLI runs on a terminal)."""
    progress = create_progress_artifact(0.0, description=f"build-features: {len(items)} items")
    results: list[dict] = []
    pending = list(items)
    running: list = []
    with runner, progress_bar(len(items), "build-features", unit="items") as bar:
        while pending or running:
            finished = len(results)
            running = _step(pending, running, ctx, workers, results, bar, runner)
            if progress and len(results) > finished:
                update_progress_artifact(progress, 100.0 * len(results) / len(items))  # type: ignore[arg-type]
    return results


def _step(pending: list[MediaItem], running: list, ctx: BuildContext, workers: int,
          results: list[dict], bar, runner) -> list:
    """Top up the running tasks, wait for the first to finish, record it. (`prefect.futures.wait`
    with a timeout waits for all of them: a free worker then idled up to the timeout.)"""
    logger = get_run_logger()
    while pending and len(running) < workers:
        running.append(runner.submit(extract_item, parameters={"item": pending.pop(0), "ctx": ctx}))
    future = next(as_completed(running))
    r = _result_of(future)
    results.append(r)
    bar.advance(1)
    logger.info("%s %s: %s", r["status"], Path(r["path"]).name, r["reason"] or f"{r['frames']} frames")
    return [f for f in running if f is not future]


def _result_of(future) -> dict:
    """A task that still failed after its retries is quarantined like any bad item."""
    try:
        return future.result()
    except Exception as exc:
        item = future.task_run.parameters.get("item") if future.task_run else None
        path = display_path(item.path) if item is not None else "unknown"
        return ItemResult(path, "quarantined", stage="extract",
                          reason=f"failed after retries: {exc}").to_dict()


@flow(name="build-features", log_prints=True, validate_parameters=True)
def build_features(
    source: Annotated[str, Field(min_length=1, description="A file, a folder (recursive) or a glob of videos, images or OpenFace CSVs")],
    labels: Annotated[str | None, Field(description="Optional CSV manifest: path, emotion, subject_id, valence, arousal, stress")] = None,
    extractor: Annotated[ExtractorName, Field(description="auto: openface-csv for CSVs, else pyfeat when its weights are installed, else mediapipe")] = "auto",
    fps: Annotated[float | None, Field(gt=0, le=240, description="Keep at most this many frames per second")] = None,
    max_frames: Annotated[int | None, Field(ge=1, description="Stop each video after this many frames")] = None,
    min_confidence: Annotated[float, Field(ge=0, le=1, description="OpenFace rows below this are blanked")] = 0.7,
    num_faces: Annotated[int, Field(ge=1, le=16, description="Faces tracked per frame (MediaPipe, py-feat)")] = 1,
    workers: Annotated[int, Field(ge=1, le=64, description="Items extracted at once")] = 2,
    task_runner: Annotated[TaskRunnerName, Field(description="thread, process, or dask (local cluster, or dask_address)")] = "thread",
    dask_address: Annotated[str | None, Field(description="An existing Dask scheduler, e.g. tcp://10.0.0.5:8786")] = None,
    force: Annotated[bool, Field(description="Re-extract items already in the warehouse")] = False,
) -> dict[str, Any]:
    started_at, t0 = now(), time.perf_counter()
    logger = get_run_logger()
    run_id = str(flow_run.get_id() or f"local-{int(time.time() * 1000)}")
    settings = load_settings()
    wh = Warehouse(settings.home).init()
    removed = sweep_orphans(wh)
    if removed:
        logger.warning("removed %d leftovers of an interrupted run", removed)
    items = discover_media(source, kinds_for(extractor))
    chosen = resolve_auto(extractor, {i.kind for i in items}, settings.models_dir)
    items = [i for i in items if i.kind in kinds_for(chosen)]
    logger.info("extractor %s%s: %d items from %s", chosen, " (auto)" if extractor == "auto" else "",
                len(items), source)
    options = ExtractOptions(fps=fps, max_frames=max_frames, min_confidence=min_confidence)
    ctx = _context(source, labels, chosen, options, num_faces, force, run_id)
    get_extractor(chosen, **ctx.extractor_options).check_ready()
    if ctx.manifest and ctx.manifest.problems:  # a row naming an unknown emotion quarantines its file
        bad_rows = {path for path, _ in ctx.manifest.problems}
        items = [i for i in items if i.path not in bad_rows]
    runner = _task_runner(task_runner, workers, dask_address)
    results = _manifest_problems(wh, ctx.manifest, run_id) + _run_items(items, ctx, workers, runner)
    failpoint("flow-end")
    summary = {"run_id": run_id, "extractor": chosen, **_summary(results, time.perf_counter() - t0)}
    params = {"source": source, "labels": labels, "extractor": extractor, "fps": fps, "max_frames": max_frames,
              "min_confidence": min_confidence, "num_faces": num_faces, "force": force,
              "task_runner": task_runner, "dask_address": dask_address}
    _finish(wh, summary, params, started_at, results)
    return summary


def _manifest_problems(wh: Warehouse, manifest: Manifest | None, run_id: str) -> list[dict]:
    rows = []
    for path, reason in manifest.problems if manifest else []:
        quarantine_item(wh, path, "label", reason, run_id)
        rows.append(ItemResult(str(path), "quarantined", stage="label", reason=reason).to_dict())
    return rows


def _finish(wh: Warehouse, summary: dict, params: dict, started_at, results: list[dict]) -> None:
    logger = get_run_logger()
    record_run(wh, {
        "run_id": summary["run_id"], "flow": "build-features", "status": "completed",
        "started_at": started_at, "finished_at": now(), "params": json.dumps(params),
        "extractor": summary["extractor"], "items": summary["items"], "loaded": summary["loaded"],
        "skipped": summary["skipped"], "quarantined": summary["quarantined"], "frames": summary["frames"],
        "face_rate": summary["face_rate"], "frames_per_s": summary["frames_per_s"],
    })
    if not refresh_catalog(wh):
        logger.warning("catalog %s is held open by another process; its views were left as they were "
                       "(they read the Parquet files, so new data is still visible)", wh.catalog_path)
    create_table_artifact(
        key="build-features-summary",
        table=[{k: v for k, v in summary.items() if k != "quarantine_reasons"}],
        description="build-features summary",
    )
    try:
        # imported here, not at the top: the report pulls in torch (~600 MB per extraction process)
        from tasks.report import publish_report_artifact

        publish_report_artifact(home=wh.home)
    except Exception as exc:  # the report is a convenience; a failure must not fail the build
        logger.warning("could not publish the warehouse report: %s", exc)
    bad = [r for r in results if r["status"] == "quarantined"]
    if bad:
        create_table_artifact(key="build-features-quarantine",
                              table=[{"path": r["path"], "stage": r["stage"], "reason": r["reason"]} for r in bad],
                              description="items quarantined in this run")
    logger.info(
        "done: %d items, %d loaded, %d skipped (already loaded), %d quarantined; %d frames, face rate %s, %s frames/s",
        summary["items"], summary["loaded"], summary["skipped"], summary["quarantined"], summary["frames"],
        summary["face_rate"], summary["frames_per_s"])
    for reason, count in summary["quarantine_reasons"].items():
        logger.warning("quarantined %d item(s): %s", count, reason)


def deployment():
    return build_features.to_deployment(
        name="default",
        description="Extract per-frame affect features from a folder of media into the warehouse.",
        tags=["affectflow"],
        enforce_parameter_schema=True,
    )


__all__ = ["SetupError", "build_features", "deployment"]
