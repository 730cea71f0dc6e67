"""Flow `predict`: a trained checkpoint + new videos -> per-frame and per-window predictions in
the `predictions` table, CSV/Parquet files and plots in an output folder.

The checkpoint is checked before any work (contract version, feature columns, its extractor);
one task run per media item, so one bad video fails alone. A video with no face is not an
error: its frames keep null predictions and the summary says so.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from uuid import UUID

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from affectflow.forms import apply_form_schema
from affectflow.settings import load_settings
from flows import flow
from tasks import predict as pr
from tasks.errors import SetupError
from tasks.extractors.base import ExtractOptions
from tasks.media import MediaItem, discover, extensions, source_base
from tasks.plots import png_data_url
from tasks.progress import progress_bar
from warehouse import Warehouse
from warehouse.catalog import refresh_catalog


class PredictParams(BaseModel):
    """What to predict on and with which model: every field is one control of the predict/default run form."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, description="Required. A video, image, folder (searched recursively) or glob; the path must exist on "
                        "the machine where the deployment is served, e.g. /data/new/clip.mp4")
    run_id: str = Field("latest", pattern=r"^[A-Za-z0-9_.-]{1,100}$",
                        description="Training run whose checkpoint predicts (see `affectflow models`); latest: the newest "
                        "completed run, e.g. latest")
    checkpoint: str | None = Field(None, min_length=1, description="A checkpoint file on the serving machine instead of a run id, e.g. /models/model.pt; "
                            "empty: the run id's")
    out: str | None = Field(None, min_length=1,
                            description="Output folder on the serving machine, e.g. /data/predictions; empty: "
                            "$AFFECTFLOW_HOME/predictions")
    fps: float | None = Field(None, gt=0, le=240, description="Predict on at most this many frames per second (frames/s, 0-240), e.g. 10; empty: every frame")
    max_frames: int | None = Field(None, ge=1, description="Stop each video after this many frames (frames, >= 1), e.g. 300; empty: the whole video")


def prepare(params: PredictParams) -> tuple[pr.Model, Path]:
    """Load and check the checkpoint and the output folder; `SetupError` (one line) when unfit."""
    settings = load_settings()
    checkpoint = Path(params.checkpoint) if params.checkpoint else None
    run_id, path = pr.resolve_checkpoint(settings.home, settings.runs_dir, params.run_id, checkpoint)
    model = pr.load_model(run_id, path)
    out = pr.check_output_dir(Path(params.out) if params.out else settings.home / "predictions")
    return model, out


@task(name="predict-item", cache_policy=NO_CACHE, task_run_name="predict {item.path.name}")
def predict_item_task(run_id: str, checkpoint: Path, item: MediaItem, out_dir: Path,
                      options: ExtractOptions) -> dict:
    model = pr.load_model(run_id, checkpoint)
    with progress_bar(pr.frame_total(item), f"predict {item.path.name}", unit="frames") as bar:
        result = pr.predict_item(model, item, out_dir, load_settings().home, options, bar)
    return result.to_dict()


IMAGE_BATCH = 256  # images per task run: one extractor and one model call for all of them


def media_for(source: str, model: pr.Model) -> list[MediaItem]:
    """The items of `source` the model's extractor reads; when there are none but other media,
    say which input the model needs and which run would take this one."""
    found = discover(source)
    items = [i for i in found.items if i.kind in model.kinds]
    if items:
        return items
    others = Counter(i.kind for i in found.items)
    if others:
        what = ", ".join(f"{n} {k} file(s)" for k, n in others.items())
        needs = "OpenFace CSVs" if model.kinds == ("csv",) else "videos or images"
        raise SetupError(f"model {model.run_id} was trained on {model.extractor} features, so it needs {needs}; "
                         f"{found.where} has {what}: predict with a model trained on "
                         f"{'video/image features (build-features with mediapipe)' if 'csv' in model.kinds else 'OpenFace CSVs'}"
                         ", or give it the input it was trained on")
    raise SetupError(f"no media found in {found.where} (looked for {' '.join(extensions(model.kinds))})")


def _progress(progress, done: int, total: int) -> None:
    if isinstance(progress, UUID):
        update_progress_artifact(progress, 100.0 * done / max(total, 1))


def _folder_name(source: str) -> str:
    base = source_base(source)
    return (base.name if base.is_dir() else base.parent.name) or "images"


@task(name="predict-images", cache_policy=NO_CACHE, task_run_name="predict images {key}")
def predict_images_task(run_id: str, checkpoint: Path, items: list[MediaItem], key: str,
                        options: ExtractOptions) -> tuple[list[dict], str | None]:
    model = pr.load_model(run_id, checkpoint)
    results, file = pr.predict_images(model, items, load_settings().home, key, options)
    return [r.to_dict() for r in results], file


def _predict_images(model: pr.Model, images: list[MediaItem], out_dir: Path, options: ExtractOptions,
                    advance) -> list[dict]:
    """Still images in batches: per-image predictions in the warehouse and one `images.csv`,
    one set of summary plots for the folder (distributions, not time courses)."""
    images = sorted(images, key=lambda i: str(i.path))
    results, files = [], []
    for start in range(0, len(images), IMAGE_BATCH):
        batch = images[start:start + IMAGE_BATCH]
        key = "images-" + hashlib.sha256("\n".join(str(i.path) for i in batch).encode()).hexdigest()[:16]
        rows, file = predict_images_task(model.run_id, model.path, batch, key, options)
        results += rows
        files += [file] if file else []
        advance(len(results))
    outputs = [str(f) for f in pr.write_folder_outputs(model, files, out_dir, f"{out_dir.name} (model {model.run_id})")] \
        if files else []
    for r in results:
        if r["status"] != "failed":
            r.update(out_dir=str(out_dir), files=outputs)
    get_run_logger().info("%d images: %s", len(results), ", ".join(
        f"{n} {s}" for s, n in Counter(r["status"] for r in results).most_common()))
    return results


def _artifacts(results: list[dict], model: pr.Model) -> None:
    published = set()
    for result in results:
        for file in result["files"]:
            if file.endswith(".png") and file not in published:
                published.add(file)
                create_image_artifact(png_data_url(Path(file)), key=f"predict-{Path(file).stem}",
                                      description=f"{Path(file).stem} of {Path(result['path']).name}")
    columns = ("path", "status", "frames", "face_frames", "dominant_emotion", "mean_stress_prob", "out_dir", "reason")
    create_table_artifact([{c: r[c] for c in columns} for r in results], key="predict-summary",
                          description=f"predictions of model {model.run_id} ({model.path})")


@flow(name="predict", validate_parameters=True)
def predict(params: PredictParams) -> dict:
    """Predict emotion, stress and valence-arousal per frame and per window on new media.

    Args:
        params: What to predict on (source, required) and with which model (run id or checkpoint); each field says its unit and an example
    """
    logger = get_run_logger()
    model, out = prepare(params)
    items = media_for(params.source, model)
    logger.info("model %s (extractor %s, emotions %s): %d items from %s", model.run_id, model.extractor,
                ", ".join(model.emotions), len(items), params.source)
    options = ExtractOptions(fps=params.fps, max_frames=params.max_frames)
    progress = create_progress_artifact(0.0, key="predict-progress", description=f"predict: {len(items)} items")
    singles = [i for i in items if i.kind != "image"]
    results = []
    for item, folder in zip(singles, pr.output_dirs(singles, out), strict=True):
        results.append(predict_item_task(model.run_id, model.path, item, folder, options))
        logger.info(results[-1]["message"])
        _progress(progress, len(results), len(items))
    images = [i for i in items if i.kind == "image"]
    if images:
        results += _predict_images(model, images, out / _folder_name(params.source), options,
                                   lambda done: _progress(progress, len(singles) + done, len(items)))
    summary_csv = out / "summary.csv"
    pd.DataFrame([{k: v for k, v in r.items() if k != "files"} for r in results]).to_csv(summary_csv, index=False)
    refresh_catalog(Warehouse(load_settings().home))
    _artifacts(results, model)
    return {"run_id": model.run_id, "checkpoint": str(model.path), "extractor": model.extractor,
            "out": str(out), "summary_csv": str(summary_csv), "items": results}


def deployment():
    return apply_form_schema(predict.to_deployment(
        name="default",
        description="Predict emotions, stress and valence-arousal on new videos with a trained checkpoint.",
        tags=["affectflow"],
        enforce_parameter_schema=True,
    ))


__all__ = ["PredictParams", "deployment", "predict", "prepare"]
