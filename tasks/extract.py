"""Extract one media item end to end: hash, label, extract, validate, write, commit.

Everything an item needs happens here so one Prefect task run handles one item; a bad item
raises `ItemError` inside and comes back as `quarantined`, never failing the whole run.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_contracts import CONTRACT_VERSION, FRAMES, EmotionMap
from tasks.errors import ItemError, TransientError
from tasks.extractors import get_extractor
from tasks.extractors.base import ExtractOptions, Extractor, ItemMeta
from tasks.faults import failpoint
from tasks.labels import Label, Manifest, resolve_label
from tasks.load import commit_item, item_lock, loaded_config, now, quarantine_item
from tasks.media import MediaItem, check_path_name, content_hash, display_path, probe
from tasks.validate import validate_batch
from warehouse import Warehouse
from warehouse.storage import read_table
from warehouse.writer import PartitionWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildContext:
    home: Path
    extractor: str
    extractor_options: dict
    options: ExtractOptions
    source_root: Path | None
    emotions: EmotionMap
    manifest: Manifest | None
    run_id: str
    force: bool = False


@dataclass
class ItemResult:
    path: str
    status: str  # loaded | skipped | quarantined
    source_id: str | None = None
    frames: int = 0
    face_frames: int = 0
    seconds: float = 0.0
    stage: str | None = None
    reason: str | None = None
    kind: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Stats:
    frames: int = 0
    face_frames: int = 0
    last_timestamp: float = 0.0
    per_video: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0.0]))

    def add(self, batch: pa.RecordBatch) -> None:
        ids = batch.column("video_id").to_numpy(zero_copy_only=False)
        success = batch.column("success").to_numpy()
        stamps = batch.column("timestamp").to_numpy()
        self.frames += batch.num_rows
        self.face_frames += int(success.sum())
        for vid in np.unique(ids):
            mask = ids == vid
            entry = self.per_video[vid]
            entry[0] += int(mask.sum())
            entry[1] += int(success[mask].sum())
            entry[2] = max(entry[2], float(stamps[mask].max()))


def _label_rows(video_ids: list[str], source_id: str, label: Label) -> list[dict]:
    return [{"video_id": vid, "source_id": source_id, "emotion": label.emotion, "stress": label.stress,
             "valence": label.valence, "arousal": label.arousal, "subject_id": label.subject_id,
             "label_source": label.source} for vid in video_ids]


def _video_rows(stats: _Stats, item: MediaItem, source_id: str, meta: ItemMeta,
                extractor: Extractor, ctx: BuildContext) -> list[dict]:
    rows = []
    common = {
        "source_id": source_id, "path": str(item.path), "kind": meta.kind, "width": meta.width,
        "height": meta.height, "fps": meta.fps, "bytes": item.path.stat().st_size,
        "extractor": extractor.name, "extractor_version": extractor.version,
        "extractor_config": json.dumps(extractor.config(), sort_keys=True),
        "config_hash": extractor.config_hash(ctx.options), "contract_version": CONTRACT_VERSION,
        "run_id": ctx.run_id, "extracted_at": now(),
    }
    for vid, (n, n_face, last) in stats.per_video.items():
        rows.append({**common, "video_id": vid, "n_frames": n, "n_face_frames": n_face,
                     "face_rate": n_face / n if n else None, "duration_s": last})
    return rows


def _extract_to_warehouse(item: MediaItem, source_id: str, extractor: Extractor, ctx: BuildContext,
                          wh: Warehouse, label: Label) -> _Stats:
    meta = ItemMeta(kind=item.kind)
    if item.kind in ("video", "image"):
        info = probe(item)
        meta.width, meta.height, meta.fps = info.width, info.height, info.fps
    stats = _Stats()
    with PartitionWriter(wh.file_for("frames", source_id), FRAMES.arrow_schema()) as writer:
        for batch in extractor.extract(item, source_id, ctx.options, meta):
            validate_batch(FRAMES, batch)
            writer.write(batch)
            stats.add(batch)
            failpoint("batch-written", item.path)
        if writer.rows == 0:
            raise ItemError("extract", "no frames came out of this item")
        writer.commit()
    failpoint("frames-written", item.path)
    commit_item(wh, item.path, source_id, _video_rows(stats, item, source_id, meta, extractor, ctx),
                _label_rows(list(stats.per_video), source_id, label))
    return stats


def process_item(item: MediaItem, ctx: BuildContext) -> ItemResult:
    """Load one item into the warehouse, skip it when already loaded with this config, or
    quarantine it with a one-line reason. Only `TransientError` escapes (to be retried)."""
    started = time.perf_counter()
    wh = Warehouse(ctx.home)
    result = ItemResult(display_path(item.path), "quarantined")
    try:
        failpoint("extract-item", item.path)
        check_path_name(item.path)
        label = resolve_label(item.path, ctx.source_root, ctx.emotions, ctx.manifest)
        result.source_id = source_id = content_hash(item.path)
        extractor = get_extractor(ctx.extractor, **ctx.extractor_options)
        try:
            key = f"{extractor.config_hash(ctx.options)}|{CONTRACT_VERSION}"
            with item_lock(wh, source_id):
                if not ctx.force and loaded_config(wh, source_id) == key:
                    result.status = "skipped"
                    _refresh_labels(wh, item, source_id, label)
                else:
                    stats = _extract_to_warehouse(item, source_id, extractor, ctx, wh, label)
                    result.status, result.frames, result.face_frames = "loaded", stats.frames, stats.face_frames
        finally:
            extractor.close()
    except ItemError as exc:
        result.stage, result.reason = exc.stage, exc.reason
    except (TransientError, MemoryError):
        raise
    except Exception as exc:  # an extractor or decoder choking on odd input is still bad input
        log.exception("unexpected error on %s", item.path)
        result.stage, result.reason = "extract", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if result.status == "quarantined":
        quarantine_item(wh, item.path, result.stage or "extract", result.reason or "", ctx.run_id, result.source_id,
                        ctx.source_root or item.path)
    result.seconds = time.perf_counter() - started
    return result


def _refresh_labels(wh: Warehouse, item: MediaItem, source_id: str, label: Label) -> None:
    """A skipped item still gets today's labels (a manifest may have changed)."""
    videos = read_table(wh.file_for("videos", source_id))
    video_ids = videos.column("video_id").to_pylist()
    commit_item(wh, item.path, source_id, videos.to_pylist(), _label_rows(video_ids, source_id, label))
