"""Predict on new media with a trained checkpoint: per-frame and per-window emotion
probabilities, stress probability, valence and arousal.

The checkpoint decides everything about the input: its extractor (the one it was trained on)
extracts the frames, its contract version and feature columns must match this affectflow's
contract (otherwise it is refused with one line), and `tasks.features.make_windows` (the same
preprocessing training used) turns the frames into windows. Each face track is predicted on its
own, from its face frames in time order:
- per frame: the window of up to `window` face frames that ends on that frame (a causal sliding
  window, so the first frames use shorter, padded windows, like training's last window);
- per window: consecutive non-overlapping windows, exactly as training cut them.
Frames without a face keep their row with null predictions.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from data_contracts import CONTRACT_VERSION, FRAMES, Column, feature_columns
from data_contracts.predictions import PREDICTIONS
from tasks.checkpoint import Predictor, load_checkpoint, predict_windows
from tasks.errors import ItemError, SetupError
from tasks.extractors import KINDS, REGISTRY, get_extractor
from tasks.extractors.base import ExtractOptions, ItemMeta
from tasks.features import make_windows
from tasks.media import MediaItem, content_hash, probe
from tasks.plots import wide_frame
from tasks.progress import Advancer
from warehouse import Warehouse
from warehouse.catalog import connect
from warehouse.writer import write_atomic

log = logging.getLogger(__name__)
KEYS = ("video_id", "frame", "face_id", "timestamp", "success")
PREDICTED = ("emotion_probs", "dominant_emotion", "dominant_prob", "stress_prob", "valence", "arousal")
CHUNK_FRAMES = 2048  # sliding windows built and predicted this many frames at a time
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]")


@dataclass(frozen=True)
class Model:
    """A loaded checkpoint that passed the checks, and what it needs from the input."""

    run_id: str
    path: Path
    predictor: Predictor
    extractor: str

    @property
    def emotions(self) -> list[str]:
        return list(self.predictor.emotions)

    @property
    def kinds(self) -> tuple[str, ...]:
        return KINDS[self.extractor]


def _latest_run(home: Path) -> tuple[str, Path]:
    con = connect(Warehouse(home))
    try:
        rows = con.execute("""SELECT run_id, checkpoint FROM training_runs
            WHERE status = 'completed' AND checkpoint <> ''
            ORDER BY finished_at DESC, run_id DESC LIMIT 1""").fetchall()
    finally:
        con.close()
    if not rows:
        raise SetupError("no trained model yet: run `affectflow train` first, or give --run-id / --checkpoint")
    return str(rows[0][0]), Path(rows[0][1])


def resolve_checkpoint(home: Path, runs_dir: Path, run_id: str = "latest",
                       checkpoint: Path | None = None) -> tuple[str, Path]:
    """(run id, checkpoint path): an explicit file, the latest completed run, or a named run."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser().absolute()
        return _UNSAFE.sub("_", path.parent.name) or "checkpoint", path
    if run_id == "latest":
        run_id, path = _latest_run(home)
        return run_id, path if path.exists() else runs_dir / run_id / "model.pt"
    if _UNSAFE.search(run_id) or run_id.startswith((".", "_")):
        raise SetupError(f"bad run id {run_id!r}; `affectflow runs` lists the runs")
    return run_id, runs_dir / run_id / "model.pt"


def _check_contract(predictor: Predictor, label: str) -> None:
    version = predictor.meta.get("contract_version")
    if version != CONTRACT_VERSION:
        raise SetupError(f"checkpoint {label} was trained on data contract {version}, but this affectflow "
                         f"reads contract {CONTRACT_VERSION}: retrain it with `affectflow train`")
    columns = predictor.prep.columns
    unknown = [c for c in columns if c not in FRAMES.by_name or not FRAMES.by_name[c].feature]
    if unknown:
        raise SetupError(f"checkpoint {label}: {len(unknown)} feature columns are not in contract "
                         f"{CONTRACT_VERSION} (e.g. {', '.join(unknown[:3])}): retrain it")


def _choose_extractor(predictor: Predictor, label: str) -> str:
    """The first of the checkpoint's training extractors that fills every one of its columns."""
    named = list(predictor.meta.get("extra", {}).get("extractors") or [])
    if not named:
        raise SetupError(f"checkpoint {label} does not say which extractor made its features")
    needed = set(predictor.prep.columns)
    for name in named:
        if name in REGISTRY and needed <= set(feature_columns(name)):
            return name
    raise SetupError(f"checkpoint {label}: no available extractor fills its {len(needed)} feature columns "
                     f"(trained on {', '.join(named)}; available: {', '.join(REGISTRY)})")


def load_model(run_id: str, path: Path) -> Model:
    """Load and check a checkpoint; every problem is a `SetupError` with one line."""
    label = f"{run_id} ({path})"
    if not path.is_file():
        raise SetupError(f"checkpoint not found: {path}; `affectflow runs` lists the trained runs")
    try:
        predictor = load_checkpoint(path)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SetupError(f"cannot load checkpoint {path}: corrupt or not an affectflow checkpoint ({reason})") from None
    _check_contract(predictor, label)
    return Model(run_id, path, predictor, _choose_extractor(predictor, label))


def check_output_dir(out: Path) -> Path:
    """Create the output folder and prove it is writable before any extraction starts."""
    out = Path(out).expanduser().absolute()
    probe = out / ".affectflow-write-test"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SetupError(f"cannot write to output folder {out}: {exc.strerror or exc}") from None
    return out


def sliding_windows(raw: np.ndarray, window: int) -> list[np.ndarray]:
    """For each frame t, the frames [t - window + 1, t] (fewer at the start)."""
    return [raw[max(0, t - window + 1): t + 1] for t in range(len(raw))]


def _outputs(predictor: Predictor, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Model outputs for arrays that each make exactly one window."""
    if not arrays:
        return {}
    return predict_windows(predictor.model, make_windows(arrays, predictor.prep))


def _per_frame(predictor: Predictor, raw: np.ndarray) -> dict[str, np.ndarray]:
    windows = sliding_windows(raw, predictor.prep.window)
    parts = [_outputs(predictor, windows[s: s + CHUNK_FRAMES]) for s in range(0, len(windows), CHUNK_FRAMES)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def _per_window(predictor: Predictor, raw: np.ndarray) -> dict[str, np.ndarray]:
    windows = make_windows([raw], predictor.prep)
    return predict_windows(predictor.model, windows) if len(windows.x) else {}


def _prediction_columns(outputs: dict[str, np.ndarray], emotions: list[str], n: int) -> dict[str, list]:
    """Contract columns from raw outputs (null where a head is absent)."""
    columns: dict[str, list] = {c: [None] * n for c in PREDICTED}
    if "emotion" in outputs:
        probs = outputs["emotion"].astype(np.float64)
        columns["emotion_probs"] = [json.dumps(dict(zip(emotions, map(float, row), strict=True))) for row in probs]
        columns["dominant_emotion"] = [emotions[i] for i in probs.argmax(1)]
        columns["dominant_prob"] = probs.max(1).tolist()
    if "stress" in outputs:
        columns["stress_prob"] = outputs["stress"].astype(float).tolist()
    if "valence_arousal" in outputs:
        columns["valence"] = outputs["valence_arousal"][:, 0].astype(float).tolist()
        columns["arousal"] = outputs["valence_arousal"][:, 1].astype(float).tolist()
    return columns


def _track_rows(predictor: Predictor, track: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Frame rows and window rows of one face track (face frames only, in time order)."""
    raw = track[predictor.prep.columns].to_numpy(np.float32, na_value=np.nan)
    frames = track["frame"].to_numpy(np.int64)
    width = predictor.prep.window
    starts = frames[np.maximum(np.arange(len(frames)) - width + 1, 0)]
    frame_rows = pd.DataFrame({"level": "frame", "frame": frames, "timestamp": track["timestamp"].to_numpy(),
                               "window_start": starts, "window_end": frames,
                               **_prediction_columns(_per_frame(predictor, raw), predictor.emotions, len(raw))})
    first = np.arange(0, len(frames), width)
    last = np.minimum(first + width, len(frames)) - 1
    window_rows = pd.DataFrame({"level": "window", "frame": None, "timestamp": track["timestamp"].to_numpy()[first],
                                "window_start": frames[first], "window_end": frames[last],
                                **_prediction_columns(_per_window(predictor, raw), predictor.emotions, len(first))})
    return frame_rows, window_rows


def predict_dataframe(model: Model, frames: pd.DataFrame) -> pd.DataFrame:
    """Prediction rows (contract columns but run_id/path/created_at) for extracted frames: every
    frame and face, null without a face, then the window rows of each face track."""
    faces = frames[frames["success"] == 1].sort_values(["video_id", "face_id", "frame"], kind="stable")
    frame_parts: list[pd.DataFrame] = []
    window_parts: list[pd.DataFrame] = []
    for (video_id, face_id), track in faces.groupby(["video_id", "face_id"], sort=True):
        frame_rows, window_rows = _track_rows(model.predictor, track)
        for part, rows in ((frame_parts, frame_rows), (window_parts, window_rows)):
            part.append(rows.assign(video_id=video_id, face_id=face_id))
    predicted = pd.concat(frame_parts) if frame_parts else None
    base = frames[list(KEYS)].sort_values(["video_id", "frame", "face_id"], kind="stable")
    per_frame = base.assign(level="frame")
    if predicted is not None:
        per_frame = per_frame.merge(predicted.drop(columns=["level", "timestamp"]),
                                    on=["video_id", "frame", "face_id"], how="left")
    rows = pd.concat([per_frame, *window_parts], ignore_index=True)
    missing = {c: None for c in ("window_start", "window_end", *PREDICTED) if c not in rows}  # no face at all: every prediction null
    return rows.assign(**missing) if missing else rows


def _arrow(values: pd.Series, column: Column) -> pa.Array:
    if column.dtype.startswith("int"):
        values = pd.to_numeric(values).astype("Int64")
    elif column.dtype.startswith("float"):
        values = pd.to_numeric(values).astype("float64")
    return pa.array(values, from_pandas=True).cast(column.arrow_type)


def to_contract(rows: pd.DataFrame, run_id: str, path: Path) -> pa.Table:
    """Prediction rows as an Arrow table in the `predictions` schema."""
    full = rows.assign(run_id=run_id, path=str(path), created_at=dt.datetime.now(dt.UTC))
    arrays = [_arrow(full[c.name] if c.name in full else pd.Series([None] * len(full), dtype=object), c)
              for c in PREDICTIONS.columns]
    return pa.Table.from_arrays(arrays, schema=PREDICTIONS.arrow_schema())


@dataclass
class ItemPrediction:
    """What happened to one media item; `status` is predicted, no_face or failed."""

    path: str
    status: str
    video_id: str | None = None
    frames: int = 0
    face_frames: int = 0
    dominant_emotion: str | None = None
    mean_stress_prob: float | None = None
    out_dir: str | None = None
    files: list[str] = field(default_factory=list)
    reason: str | None = None

    @property
    def message(self) -> str:
        name = Path(self.path).name
        if self.status == "failed":
            return f"{name}: failed: {self.reason}"
        if self.status == "no_face":
            return f"{name}: no face found in any of {self.frames} frames, so no predictions"
        return (f"{name}: {self.face_frames}/{self.frames} frames with a face, mostly "
                f"{self.dominant_emotion}; files in {self.out_dir}")

    def to_dict(self) -> dict:
        return {**asdict(self), "message": self.message}


def extract_frames(model: Model, item: MediaItem, options: ExtractOptions, progress: Advancer) -> pd.DataFrame:
    """The item's frames (keys + the checkpoint's columns) from the checkpoint's extractor."""
    extractor = get_extractor(model.extractor)
    if hasattr(extractor, "batch_rows"):
        extractor.batch_rows = 64  # small batches so the progress bar moves smoothly
    columns = [*KEYS, *model.predictor.prep.columns]
    parts = []
    try:
        extractor.check_ready()
        for batch in extractor.extract(item, content_hash(item.path), options, ItemMeta(kind=item.kind)):
            parts.append(pa.Table.from_batches([batch]).select(columns).to_pandas())
            progress.advance(len(np.unique(batch.column("frame").to_numpy())))
    finally:
        extractor.close()
    if not parts:
        raise ItemError("extract", "no frames came out of this item")
    return pd.concat(parts, ignore_index=True)


def _summary(result: ItemPrediction, frame_rows: pd.DataFrame) -> None:
    result.video_id = str(frame_rows["video_id"].iloc[0])
    result.frames = int(frame_rows["frame"].nunique())
    with_face = frame_rows[frame_rows["face"] == 1]
    result.face_frames = int(with_face["frame"].nunique())
    result.status = "predicted" if result.face_frames else "no_face"
    if "dominant_emotion" in with_face and with_face["dominant_emotion"].notna().any():
        result.dominant_emotion = str(with_face["dominant_emotion"].mode().iloc[0])
    if with_face["stress_prob"].notna().any():
        result.mean_stress_prob = round(float(with_face["stress_prob"].mean()), 4)


def _write_files(rows: pd.DataFrame, contract: pa.Table, model: Model, out_dir: Path, title: str) -> list[Path]:
    from tasks.plots import plot_all

    out_dir.mkdir(parents=True, exist_ok=True)
    frame_rows = wide_frame(rows, model.emotions)
    files = [out_dir / "frames.csv", out_dir / "windows.csv"]
    frame_rows.to_csv(files[0], index=False)
    wide_frame(rows, model.emotions, "window").to_csv(files[1], index=False)
    files.append(write_atomic(out_dir / "predictions.parquet", contract))
    if (frame_rows["face"] == 1).any():
        files += plot_all(frame_rows, model.emotions, out_dir, title)
    return files


def predict_item(model: Model, item: MediaItem, out_dir: Path, home: Path,
                 options: ExtractOptions | None = None, progress: Advancer | None = None) -> ItemPrediction:
    """Extract, predict, and write one item's predictions (warehouse + files in `out_dir`).
    A bad item comes back as `failed` with a one-line reason; nothing else is raised for it."""
    result = ItemPrediction(str(item.path), "failed")
    with _bad_input(result, item):
        frames = extract_frames(model, item, options or ExtractOptions(), progress or _NoProgress())
        rows = predict_dataframe(model, frames)
        contract = to_contract(rows, model.run_id, item.path)
        _summary(result, wide_frame(rows, model.emotions))
        wh = Warehouse(home).init()
        write_atomic(wh.file_for("predictions", f"{model.run_id}.{result.video_id}"), contract)
        files = _write_files(rows, contract, model, out_dir, f"{item.path.name} (model {model.run_id})")
        result.out_dir, result.files = str(out_dir), [str(f) for f in files]
    return result


@contextmanager
def _bad_input(result: ItemPrediction, item: MediaItem) -> Iterator[None]:
    """An item the block fails on is recorded in `result.reason` and the batch goes on; setup
    errors and running out of memory stop the run."""
    try:
        yield
    except ItemError as exc:
        result.reason = exc.reason
    except (SetupError, MemoryError):
        raise
    except Exception as exc:  # a decoder or extractor choking on odd input is still bad input
        log.exception("prediction failed on %s", item.path)
        result.reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"


def _frames_of(model: Model, extractor, item: MediaItem, options: ExtractOptions) -> pd.DataFrame:
    columns = [*KEYS, *model.predictor.prep.columns]
    parts = [pa.Table.from_batches([b]).select(columns).to_pandas()
             for b in extractor.extract(item, content_hash(item.path), options, ItemMeta(kind=item.kind))]
    if not parts:
        raise ItemError("extract", "no frames came out of this item")
    return pd.concat(parts, ignore_index=True)


def _extract_one(model: Model, extractor, item: MediaItem, options: ExtractOptions,
                 result: ItemPrediction) -> pd.DataFrame | None:
    with _bad_input(result, item):
        return _frames_of(model, extractor, item, options)
    return None


def predict_images(model: Model, items: list[MediaItem], home: Path, key: str,
                   options: ExtractOptions | None = None) -> tuple[list[ItemPrediction], str | None]:
    """Predict a batch of still images with one extractor (one model load) and one model call
    over all of them; their rows go to one `predictions` file (`<run_id>.<key>`). Returns the
    per-image results and that file (None when no image gave frames)."""
    from tasks.extract import worker_extractor

    extractor = worker_extractor(model.extractor, {})
    extractor.check_ready()
    results, frames, paths = [], [], {}
    for item in items:
        result = ItemPrediction(str(item.path), "failed")
        results.append(result)
        found = _extract_one(model, extractor, item, options or ExtractOptions(), result)
        if found is not None:
            frames.append(found)
            paths[str(found["video_id"].iloc[0])] = (item.path, result)
    if not frames:
        return results, None
    rows = predict_dataframe(model, pd.concat(frames, ignore_index=True))
    tables = []
    for video_id, part in rows.groupby("video_id", sort=True):
        path, result = paths[str(video_id)]
        _summary(result, wide_frame(part, model.emotions))
        tables.append(to_contract(part, model.run_id, path))
    target = Warehouse(home).init().file_for("predictions", f"{model.run_id}.{key}")
    write_atomic(target, pa.concat_tables(tables))
    return results, str(target)


def write_folder_outputs(model: Model, prediction_files: list[str], out_dir: Path, title: str) -> list[Path]:
    """One CSV of per-image predictions and one set of summary plots for a folder of images."""
    import pyarrow.parquet as pq

    from tasks.plots import plot_folder

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = pa.concat_tables([pq.read_table(f) for f in prediction_files]).to_pandas()
    rows["success"] = rows[list(PREDICTED)].notna().any(axis=1).astype(int)  # a face: something was predicted
    images = wide_frame(rows, model.emotions)
    images.insert(0, "path", rows.loc[rows["level"] == "frame", "path"].to_numpy())
    files = [out_dir / "images.csv"]
    images.to_csv(files[0], index=False)
    if (images["face"] == 1).any():
        files += plot_folder(images, model.emotions, out_dir, title)
    return files


class _NoProgress:
    def advance(self, n: int = 1) -> None:
        return None


def output_dirs(items: list[MediaItem], out: Path) -> list[Path]:
    """One folder per item, named after the file (suffixed with a counter when names repeat)."""
    seen: dict[str, int] = {}
    folders = []
    for item in items:
        stem = _UNSAFE.sub("_", item.path.stem) or "item"
        seen[stem] = seen.get(stem, 0) + 1
        folders.append(out / (stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"))
    return folders


def frame_total(item: MediaItem) -> int | None:
    """Frames the decoder expects (for the progress bar), None when unknown."""
    if item.kind not in ("video", "image"):
        return None
    try:
        return probe(item).frame_count
    except ItemError:
        return None
