"""Flow `train`: split + features -> self-supervised pretraining -> supervised multitask training
(-> pseudo-labels -> fine-tuning) -> evaluation on the test holdout, with baselines trained on the
same units. Protocols: `pooled` (default: every label trains one ensemble) and `research` (the
research pipeline's stages); see tasks/train.py.

Parameters are one pydantic model (`TrainParams`), so the Prefect UI shows a validated form and
the deployment (enforce_parameter_schema) refuses bad values before a run starts. Each stage is
a task over the run directory `<AFFECTFLOW_HOME>/runs/<run_id>/`; giving an earlier `run_id`
resumes that run from its last finished epoch.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from pathlib import Path
from typing import cast

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from affectflow.forms import apply_form_schema
from affectflow.settings import Settings, load_settings
from flows import flow
from flows.train_params import TrainParams
from tasks import evaluate as ev
from tasks import train as tr
from tasks.faults import failpoint
from tasks.report import publish_report_artifact
from tasks.run_registry import current_run_id, tracked_run
from warehouse import Warehouse
from warehouse.catalog import connect, refresh_catalog


@task(name="load-split", cache_policy=NO_CACHE)
def load_split_task(home: Path, split_id: str, run_dir: Path, cfg: tr.TrainConfig) -> dict:
    info_path = run_dir / "info.json"
    if info_path.exists():  # a resumed run keeps the data and preprocessing it started with
        return json.loads(info_path.read_text(encoding="utf-8"))
    con = connect(Warehouse(home))
    try:
        info = tr.prepare_data(con, split_id, run_dir, cfg.window, cfg.protocol, cfg.extractor)
    finally:
        con.close()
    tr.save_json(info_path, info)
    return info


def _log_data(logger, info: dict) -> None:
    logger.info("split %s, protocol %s: units %s; labelled training units %d (%s); window %d",
                info["split_id"], info["protocol"], info["units"], info["labelled_units"],
                "+".join(info["labelled_partitions"]), info["window"])
    logger.info("features: %s", info["features"])
    for column, reason in info.get("dropped_columns", {}).items():
        logger.info("dropped column %s: %s", column, reason)
    for extractor, units in info.get("excluded_units", {}).items():
        logger.info("left out %d units of extractor %s (this model reads %s)", units, extractor,
                    ", ".join(info["extractors"]))


def _progress_callback(progress_id, offset: int, total: int):
    logger = get_run_logger()
    shown = [0.0]  # an ensemble's members each count their epochs from 1: the bar only moves on

    def on_epoch(stage: str, epoch: int, epochs: int, record: dict) -> None:
        failpoint("train-epoch", f"{stage}:{epoch}")  # after the epoch's checkpoint is written
        logger.info("%s (%s) epoch %d/%d: train loss %.4f, validation loss %.4f, %.0f frames/s",
                    stage, record.get("fit", stage), epoch, epochs, record["train_loss"], record["val_loss"],
                    record["frames_per_s"])
        value = min(100.0, 100.0 * (offset + epoch) / total)
        if progress_id is not None and value > shown[0]:
            shown[0] = value
            update_progress_artifact(progress_id, value)
    return on_epoch


@task(name="train-stage", cache_policy=NO_CACHE, task_run_name="{stage}")
def stage_task(stage: str, run_dir: Path, cfg: tr.TrainConfig, progress_id, offset: int, total: int) -> dict:
    functions = {"pretrain": tr.pretrain, "supervised": tr.supervised, "finetune": tr.finetune}
    return functions[stage](run_dir, cfg, _progress_callback(progress_id, offset, total))


@task(name="pseudo-label", cache_policy=NO_CACHE)
def pseudo_label_task(run_dir: Path, cfg: tr.TrainConfig) -> dict:
    return tr.pseudo_label(run_dir, cfg)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(run_dir: Path, cfg: tr.TrainConfig) -> dict:
    results = ev.evaluate_run(run_dir, cfg)
    tr.finish_run(run_dir, cfg, results)
    return results


def _run_stages(params: TrainParams, run_dir: Path, cfg: tr.TrainConfig) -> list[dict]:
    enabled = [s for s in tr.STAGES if getattr(params, s)]
    if cfg.pooled and not cfg.personalise:
        enabled = [s for s in enabled if s != "finetune"]  # pooled: the finetune units train with the rest
    # Prefect's async_dispatch types the result as `UUID | Coroutine`; called from this sync flow it
    # runs synchronously and returns the UUID.
    progress = cast(uuid.UUID, create_progress_artifact(
        0.0, key="train-progress", description=f"train: {', '.join(enabled)}, up to {cfg.epochs} epochs each"))
    summaries = []
    for index, stage in enumerate(enabled):
        if stage == "finetune" and params.pseudo_labels and not cfg.pooled:
            summaries.append({"stage": "pseudo-label", **pseudo_label_task(run_dir, cfg)})
        summary = stage_task(stage, run_dir, cfg, progress, index * cfg.epochs, len(enabled) * cfg.epochs)
        summaries.append(summary)
    if progress is not None:
        update_progress_artifact(progress, 100.0)
    return summaries


def _png_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _artifacts(run_dir: Path, run_id: str, results: dict, stages: list[dict]) -> None:
    history = [h for s in stages for h in s.get("history", [])]
    ev.plot_loss_curves(history, run_dir / "loss_curves.png")
    create_image_artifact(_png_url(run_dir / "loss_curves.png"), key="train-loss-curves",
                          description=f"loss curves of run {run_id}")
    confusion = results.get("model", {}).get("emotion", {}).get("confusion")
    if confusion:
        ev.plot_confusion(confusion, results["emotions"], run_dir / "confusion.png")
        create_image_artifact(_png_url(run_dir / "confusion.png"), key="train-confusion-matrix",
                              description=f"test confusion matrix of run {run_id}")
    table = ev.side_by_side(results)
    if table:
        create_table_artifact(table, key="train-metrics",
                              description=f"test metrics of run {run_id}: model vs majority vs logistic regression")
    lines = [f"# Training run `{run_id}`", "", f"Checkpoint: `{run_dir / 'model.pt'}`", "",
             _trained_on_line(results), "", results.get("no_test", ""), "",
             "| stage | epochs | members | best validation loss | frames/s |", "|---|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s.get('epochs_run', '')} | {s.get('members', '')} | {_readable(s.get('best_val_loss'))} | "
              f"{_readable(s.get('frames_per_s'))} |" for s in stages if "epochs_run" in s]
    create_markdown_artifact("\n".join(lines), key="train-summary", description="training run summary")


def _readable(value: object) -> str:
    """A number as the summary shows it: 4 significant digits (`2010`, not `2009.5335108778058`)."""
    return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)


def _trained_on_line(results: dict) -> str:
    used = results.get("trained_on", {})
    return (f"The model and both baselines learnt from the same {used.get('units')} labelled units "
            f"({' + '.join(used.get('partitions', []))}; protocol {used.get('protocol')}).")


def new_run_id() -> str:
    return f"train-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


@flow(name="train", validate_parameters=True)
def train(params: TrainParams = TrainParams()) -> dict:  # noqa: B008 - pydantic default is immutable here
    """Train the multitask model on a split and evaluate it (and the baselines) on its test holdout.

    Args:
        params: The training run's settings (split, stages, model size, epochs, time limit); each field says its unit and an example
    """
    logger = get_run_logger()
    settings = load_settings()
    with tracked_run(settings.home, current_run_id(), "train", logger.warning):
        return _train(params, settings, logger)


def _train(params: TrainParams, settings: Settings, logger) -> dict:
    wh = Warehouse(settings.home).init()
    run_id = params.run_id or new_run_id()
    run_dir = settings.runs_dir / run_id
    cfg = params.train_config(deadline=time.time() + params.max_minutes * 60)
    started, stages = dt.datetime.now(dt.UTC), []
    params_json = params.model_dump_json()
    logger.info("run %s in %s on %s", run_id, run_dir, tr.resolve_device(cfg.device))
    # A split that cannot be trained on is refused here, before any training_runs row exists.
    info = load_split_task(settings.home, params.split_id, run_dir, cfg)
    _log_data(logger, info)
    try:
        stages = _run_stages(params, run_dir, cfg)
        results = evaluate_task(run_dir, cfg)
    except Exception as exc:
        error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        tr.record_run(wh, tr.run_row(run_id, cfg, info, stages, params_json, started,
                                     dt.datetime.now(dt.UTC), None, error), [])
        raise
    checkpoint = run_dir / "model.pt"
    row = tr.run_row(run_id, cfg, info, stages, params_json, started, dt.datetime.now(dt.UTC), checkpoint)
    tr.record_run(wh, row, ev.metric_rows(run_id, info["split_id"], results))
    refresh_catalog(wh)
    _artifacts(run_dir, run_id, results, stages)
    try:
        publish_report_artifact(home=settings.home)
    except Exception as exc:  # the report is a convenience; a failure must not fail training
        logger.warning("could not publish the warehouse report: %s", exc)
    logger.info("%s", _trained_on_line(results))
    if results.get("no_test"):
        logger.warning("%s", results["no_test"])
    for line in ev.side_by_side(results):
        logger.info("%s %s: model %s, majority %s, logreg %s", line["task"], line["metric"],
                    line["model"], line["majority"], line["logreg"])
    return {"run_id": run_id, "split_id": info["split_id"], "checkpoint": str(checkpoint),
            "protocol": cfg.protocol, "trained_on": results.get("trained_on"), "no_test": results.get("no_test"),
            "features": info["features"], "window": info["window"],
            "stages": [{k: v for k, v in s.items() if k != "history"} for s in stages],
            "metrics": ev.side_by_side(results)}


def deployment():
    return apply_form_schema(train.to_deployment(
        name="default",
        description="Pretrain, train and fine-tune the multitask affect model on a split; evaluate on its test holdout.",
        tags=["affectflow"],
        enforce_parameter_schema=True,
    ))


__all__ = ["TrainParams", "deployment", "train"]
