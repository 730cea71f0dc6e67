"""Flow `predict`: a trained checkpoint + new videos -> per-frame and per-window predictions in
the `predictions` table, CSV/Parquet files and plots in an output folder.

The checkpoint is checked before any work (contract version, feature columns, its extractor);
one task run per media item, so one bad video fails alone. A video with no face is not an
error: its frames keep null predictions and the summary says so.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from affectflow.settings import load_settings
from tasks import predict as pr
from tasks.extractors.base import ExtractOptions
from tasks.media import MediaItem, discover_media
from tasks.plots import png_data_url
from tasks.progress import progress_bar
from warehouse import Warehouse
from warehouse.catalog import refresh_catalog


class PredictParams(BaseModel):
    """What to predict on and with which model (the form in the Prefect UI)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, description="A video, an image, a folder (recursive) or a glob")
    run_id: str = Field("latest", pattern=r"^[A-Za-z0-9_.-]{1,100}$",
                        description="Training run whose checkpoint predicts; `latest` is the newest completed run")
    checkpoint: str | None = Field(None, min_length=1, description="A checkpoint file instead of a run id")
    out: str | None = Field(None, min_length=1,
                            description="Output folder (default $AFFECTFLOW_HOME/predictions)")
    fps: float | None = Field(None, gt=0, le=240, description="Predict on at most this many frames per second")
    max_frames: int | None = Field(None, ge=1, description="Stop each video after this many frames")


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


def _artifacts(results: list[dict], model: pr.Model) -> None:
    for result in results:
        for file in result["files"]:
            if file.endswith(".png"):
                create_image_artifact(png_data_url(Path(file)), key=f"predict-{Path(file).stem}",
                                      description=f"{Path(file).stem} of {Path(result['path']).name}")
    columns = ("path", "status", "frames", "face_frames", "dominant_emotion", "mean_stress_prob", "out_dir", "reason")
    create_table_artifact([{c: r[c] for c in columns} for r in results], key="predict-summary",
                          description=f"predictions of model {model.run_id} ({model.path})")


@flow(name="predict", validate_parameters=True)
def predict(params: PredictParams) -> dict:
    """Predict emotion, stress and valence-arousal per frame and per window on new media."""
    logger = get_run_logger()
    model, out = prepare(params)
    items = discover_media(params.source, model.kinds)
    logger.info("model %s (extractor %s, emotions %s): %d items from %s", model.run_id, model.extractor,
                ", ".join(model.emotions), len(items), params.source)
    options = ExtractOptions(fps=params.fps, max_frames=params.max_frames)
    progress = create_progress_artifact(0.0, key="predict-progress", description=f"predict: {len(items)} items")
    results = []
    for index, (item, folder) in enumerate(zip(items, pr.output_dirs(items, out), strict=True)):
        results.append(predict_item_task(model.run_id, model.path, item, folder, options))
        logger.info(results[-1]["message"])
        if isinstance(progress, UUID):
            update_progress_artifact(progress, 100.0 * (index + 1) / len(items))
    summary_csv = out / "summary.csv"
    pd.DataFrame([{k: v for k, v in r.items() if k != "files"} for r in results]).to_csv(summary_csv, index=False)
    refresh_catalog(Warehouse(load_settings().home))
    _artifacts(results, model)
    return {"run_id": model.run_id, "checkpoint": str(model.path), "extractor": model.extractor,
            "out": str(out), "summary_csv": str(summary_csv), "items": results}


def deployment():
    return predict.to_deployment(
        name="default",
        description="Predict emotions, stress and valence-arousal on new videos with a trained checkpoint.",
        tags=["affectflow"],
        enforce_parameter_schema=True,
    )


__all__ = ["PredictParams", "deployment", "predict", "prepare"]
