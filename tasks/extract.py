"""Extract one unit of work end to end: lock, extract, validate, write, commit.

A unit is one video, or a shard of small items (images, OpenFace CSVs) planned by `tasks.plan`.
One Prefect task run handles one unit. A bad member is quarantined with its reason and its
shard-mates still load; only `TransientError` escapes, to be retried. Each worker thread keeps
one extractor (and its model) for the whole run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_contracts import CONTRACT_VERSION, FRAMES
from tasks import extract_ahead
from tasks.errors import ItemError, TransientError
from tasks.extractors import get_extractor
from tasks.extractors.base import ExtractOptions, Extractor, FrameBatchBuilder, ImageAdder, ItemMeta
from tasks.faults import failpoint
from tasks.labels import Label
from tasks.load import after_commit, commit_unit, file_lock, now, quarantine_item, unit_locks
from tasks.media import display_path, prefetched, probe, read_image
from tasks.native_logs import captured
from tasks.plan import Member, Unit
from tasks.validate import validate_batch
from warehouse import Warehouse
from warehouse.inventory import inventory
from warehouse.storage import StorageError
from warehouse.writer import PartitionWriter

log = logging.getLogger(__name__)
PARTIAL_BELOW = 0.9  # a video that decodes to fewer than this share of its listed frames is partial
IMAGES_AHEAD = 2  # still images a shard decodes ahead of the detector (4 measured no faster, 13 MB more on 720p)


@dataclass(frozen=True)
class BuildContext:
    home: Path
    extractor_options: dict[str, dict]  # extractor name -> constructor options
    options: ExtractOptions
    run_id: str
    force: bool = False
    warehouse_url: str | None = None
    source_root: Path | None = None  # the folder or file being built: quarantine copies only files in it


@dataclass
class ItemResult:
    path: str
    status: str  # loaded | skipped | duplicate | quarantined | failed
    source_id: str | None = None
    frames: int = 0
    face_frames: int = 0
    seconds: float = 0.0
    stage: str | None = None
    reason: str | None = None
    kind: str | None = None
    partial: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Stats:
    frames: int = 0
    face_frames: int = 0
    per_video: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0.0]))

    def add(self, batch: pa.RecordBatch) -> None:
        self.add_rows(*_stat_columns(batch))

    def add_rows(self, ids: np.ndarray, success: np.ndarray, stamps: np.ndarray) -> None:
        self.frames += len(ids)
        self.face_frames += int(success.sum())
        for vid in np.unique(ids):
            mask = ids == vid
            entry = self.per_video[vid]
            entry[0] += int(mask.sum())
            entry[1] += int(success[mask].sum())
            entry[2] = max(entry[2], float(stamps[mask].max()))


def _stat_columns(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (batch.column("video_id").to_numpy(zero_copy_only=False), batch.column("success").to_numpy(),
            batch.column("timestamp").to_numpy())


@dataclass
class _Done:
    """A member whose rows are ready to commit: its `batches`, or for an image of a shard the rows
    `span` (start, end) of the shard's one batch. A slice of ~830 columns costs ~200 KB of Arrow
    objects, so an image's slice is made only when it is validated alone."""

    member: Member
    meta: ItemMeta
    stats: _Stats
    batches: list[pa.RecordBatch]  # empty for a streamed video (already in the writer)
    span: tuple[pa.RecordBatch, int, int] | None = None

    def rows(self) -> list[pa.RecordBatch]:
        if self.span is None:
            return self.batches
        whole, start, end = self.span
        return [whole.slice(start, end - start)]


_local = threading.local()
_made: weakref.WeakSet = weakref.WeakSet()


def worker_extractor(name: str, options: dict) -> Extractor:
    """This thread's extractor for `name` and `options`: built (model loaded) once per run."""
    cache = getattr(_local, "extractors", None)
    if cache is None:
        cache = _local.extractors = {}
    key = (name, json.dumps(options, sort_keys=True, default=str))
    if key not in cache:
        cache[key] = get_extractor(name, **options)
        _made.add(cache[key])
    return cache[key]


def close_extractors() -> None:
    """Release every worker's extractor (models, threads); called when a run ends."""
    for extractor in list(_made):
        extractor.close()
    _made.clear()
    _local.__dict__.clear()


def label_rows(video_ids: list[str], source_id: str, label: Label) -> list[dict]:
    return [{"video_id": vid, "source_id": source_id, "emotion": label.emotion, "stress": label.stress,
             "valence": label.valence, "arousal": label.arousal, "subject_id": label.subject_id,
             "label_source": label.source} for vid in video_ids]


def _video_rows(done: _Done, extractor: Extractor, ctx: BuildContext) -> list[dict]:
    m, meta = done.member, done.meta
    common = {
        "source_id": m.source_id, "path": str(m.item.path), "kind": meta.kind, "width": meta.width,
        "height": meta.height, "fps": meta.fps, "bytes": m.stat.bytes, "mtime_ns": m.stat.mtime_ns,
        "partial": bool(meta.extra.get("partial")), "note": meta.extra.get("note"),
        "extractor": extractor.name, "extractor_version": extractor.version,
        "extractor_config": json.dumps(extractor.config(), sort_keys=True),
        "config_hash": extractor.config_hash(ctx.options), "contract_version": CONTRACT_VERSION,
        "run_id": ctx.run_id, "extracted_at": now(),
    }
    return [{**common, "video_id": vid, "n_frames": n, "n_face_frames": n_face,
             "face_rate": n_face / n if n else None, "duration_s": last}
            for vid, (n, n_face, last) in done.stats.per_video.items()]


def _meta(member: Member) -> ItemMeta:
    meta = ItemMeta(kind=member.item.kind)
    if member.item.kind == "video":
        info = probe(member.item)
        meta.width, meta.height, meta.fps = info.width, info.height, info.fps
        meta.extra["listed_frames"] = info.frame_count
    return meta


def _check_partial(meta: ItemMeta, frames_read: int | None, options: ExtractOptions) -> None:
    """A video whose decoder stopped well short of the frames its container lists loads what
    it decoded, flagged `partial` with a note (bit rot, a cut-off download)."""
    listed = meta.extra.get("listed_frames")
    if meta.kind != "video" or not listed or frames_read is None or options.max_frames or options.fps:
        return
    if frames_read < PARTIAL_BELOW * listed:
        meta.extra["partial"] = True
        meta.extra["note"] = (f"decoded {frames_read} of the {listed} frames the container lists: "
                              "the file is damaged after that point")


def _extract(member: Member, extractor: Extractor, ctx: BuildContext, meta: ItemMeta) -> Iterator[pa.RecordBatch]:
    failpoint("extract-item", member.item.path)
    ahead = _claim_ahead(member, ctx)
    if ahead is not None:
        yield from ahead.rows(meta)
    else:
        yield from extractor.extract(member.item, member.source_id, ctx.options, meta)
    _check_partial(meta, meta.extra.get("frames_read"), ctx.options)


def _claim_ahead(member: Member, ctx: BuildContext):
    """The extraction the CLI started for this very file while Prefect loaded, if any."""
    if not extract_ahead.pending():
        return None
    key = extract_ahead.AheadKey.of(member.item.path, (member.stat.bytes, member.stat.mtime_ns), member.extractor,
                                    ctx.extractor_options.get(member.extractor, {}), ctx.options)
    return extract_ahead.claim(key, member.source_id)


def _stream_video(member: Member, extractor: Extractor, ctx: BuildContext, writer: PartitionWriter) -> _Done:
    """A video: validated and written batch by batch (memory stays flat in its length)."""
    meta, stats = _meta(member), _Stats()
    for batch in _extract(member, extractor, ctx, meta):
        validate_batch(FRAMES, batch)
        writer.write(batch)
        stats.add(batch)
        failpoint("batch-written", member.item.path)
    if stats.frames == 0:
        raise ItemError("extract", "no frames came out of this item")
    return _Done(member, meta, stats, [])


def _collect(member: Member, extractor: Extractor, ctx: BuildContext) -> _Done:
    meta, stats = _meta(member), _Stats()
    batches = []
    for batch in _extract(member, extractor, ctx, meta):
        batches.append(batch)
        stats.add(batch)
    if stats.frames == 0:
        raise ItemError("extract", "no frames came out of this item")
    return _Done(member, meta, stats, batches)


def _combined(done: list[_Done]) -> pa.RecordBatch | None:
    spans = [d.span for d in done if d.span is not None]
    if spans and len(spans) == len(done) and len({id(whole) for whole, _, _ in spans}) == 1:
        rows = np.concatenate([np.arange(start, end) for _, start, end in spans])
        return spans[0][0].take(pa.array(rows, pa.int64()))
    batches = [b for d in done for b in d.rows()]
    if not batches:
        return None
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _validate_shard(done: list[_Done], results: dict[str, ItemResult],
                    whole: pa.RecordBatch | None) -> tuple[list[_Done], pa.RecordBatch | None]:
    """One contract validation for the whole shard; only when it fails, one per member, so the
    members that break the contract are quarantined alone. Returns the good members and their
    rows as one batch."""
    whole = whole if whole is not None else _combined(done)
    if whole is None:
        return done, None
    try:
        validate_batch(FRAMES, whole)
        return done, whole
    except ItemError:
        pass
    good = []
    for d in done:
        try:
            for batch in d.rows():
                validate_batch(FRAMES, batch)
            good.append(d)
        except ItemError as exc:
            _bad(results[d.member.source_id], exc.stage, exc.reason)
    return good, _combined(good)


def _decoded(todo: list[Member]):
    """(member, RGB image or the `ItemError` reading it), decoded a few images ahead in a
    background thread: JPEG decoding (which releases the GIL) overlaps detection."""
    def read(m: Member):
        try:
            return m, read_image(m.item.path), None
        except ItemError as exc:
            return m, None, exc
    return prefetched((read(m) for m in todo), IMAGES_AHEAD)


def _collect_images(todo: list[Member], extractor: ImageAdder, results: dict[str, ItemResult]
                    ) -> tuple[list[_Done], pa.RecordBatch | None]:
    """A shard of still images as one batch of rows: each decoded image straight into one
    builder (per-image batches cost more than the detector on small images). One capture of
    native output for the shard: the decoder's and the detector's own captures nest in it
    instead of redirecting fd 2 twice per image (0.24 ms each, 0.6 CPU-s on 1,330 images)."""
    builder = FrameBatchBuilder(todo[0].source_id, len(todo) * max(1, int(getattr(extractor, "num_faces", 1))))
    spans: list[tuple[Member, ItemMeta, int, int]] = []
    with captured():
        for m, rgb, error in _decoded(todo):
            if error is not None:
                _bad(results[m.source_id], error.stage, error.reason)
                continue
            start = builder.n
            if _run_member(m, lambda m=m, rgb=rgb: _add_image(m, rgb, extractor, builder), results[m.source_id]):
                spans.append((m, ItemMeta(kind="image", width=rgb.shape[1], height=rgb.shape[0]), start, builder.n))
    whole = builder.flush()
    if whole is None:
        return [], None
    columns = _stat_columns(whole)
    done = []
    for m, meta, start, end in spans:
        stats = _Stats()
        stats.add_rows(*(c[start:end] for c in columns))
        done.append(_Done(m, meta, stats, [], (whole, start, end)))
    return done, whole


def _add_image(member: Member, rgb, extractor: ImageAdder, builder: FrameBatchBuilder) -> bool:
    failpoint("extract-item", member.item.path)
    extractor.add_image(rgb, member.source_id, member.source_id, builder)
    return True


def _bad(result: ItemResult, stage: str, reason: str) -> None:
    result.status, result.stage, result.reason = "quarantined", stage, reason


def _run_member(member: Member, work, result: ItemResult) -> _Done | None:
    """One member's extraction; a bad item (or a library choking on it) becomes its result."""
    started = time.perf_counter()
    try:
        return work()
    except ItemError as exc:
        _bad(result, exc.stage, exc.reason)
    except (TransientError, MemoryError, StorageError):  # retried, or the run cannot go on
        raise
    except Exception as exc:  # an extractor or decoder choking on odd input is still bad input
        log.exception("unexpected error on %s", member.item.path)
        first = str(exc).splitlines()[0] if str(exc) else ""
        _bad(result, "extract", f"{type(exc).__name__}: {first}")
    finally:
        result.seconds = time.perf_counter() - started
    return None


def _extract_unit(unit: Unit, extractor: Extractor, ctx: BuildContext, wh: Warehouse,
                  todo: list[Member], results: dict[str, ItemResult]) -> tuple[list[_Done], PartitionWriter]:
    writer = PartitionWriter(wh.file_for("frames", unit.key), FRAMES.arrow_schema())
    if not unit.sharded:
        member = todo[0]
        done = _run_member(member, lambda: _stream_video(member, extractor, ctx, writer), results[member.source_id])
        return ([done] if done else []), writer
    if isinstance(extractor, ImageAdder) and all(m.item.kind == "image" for m in todo):
        collected, whole = _collect_images(todo, extractor, results)
    else:
        collected = [d for m in todo
                     if (d := _run_member(m, lambda m=m: _collect(m, extractor, ctx), results[m.source_id]))]
        whole = None
    good, rows = _validate_shard(collected, results, whole)
    if rows is not None:
        writer.write(rows)
    for d in good:
        failpoint("batch-written", d.member.item.path)
    return good, writer


def process_unit(unit: Unit, ctx: BuildContext) -> list[dict]:
    """Load a unit's members into the warehouse, or quarantine the bad ones with a one-line
    reason each. Members another run loaded while this one waited for their locks are skipped.
    Only `TransientError` escapes (the whole unit is retried: nothing of it was committed)."""
    wh = Warehouse(ctx.home, ctx.warehouse_url)
    results = {m.source_id: ItemResult(display_path(m.item.path), "quarantined", m.source_id, kind=m.item.kind)
               for m in unit.members}
    extractor = worker_extractor(unit.extractor, ctx.extractor_options.get(unit.extractor, {}))
    key = f"{extractor.config_hash(ctx.options)}|{CONTRACT_VERSION}"
    with unit_locks(wh, {*results, unit.key}):  # (a shard's key too: its temporary files are live)
        inv = inventory(wh)  # caught up with what other runs committed meanwhile
        todo = [m for m in unit.members if ctx.force or inv.loaded(m.source_id, key) is None]
        for m in unit.members:
            if m not in todo:
                results[m.source_id].status = "skipped"
        if todo:
            done, writer = _extract_unit(unit, extractor, ctx, wh, todo, results)
            with writer:  # aborted (its temporary file removed) unless committed
                if done:
                    _commit(unit, done, writer, extractor, ctx, wh, results)
        _settle(unit, todo, results, ctx, wh)
    return [r.to_dict() for r in results.values()] + _alias_results(todo, results)


def _alias_results(todo: list[Member], results: dict[str, ItemResult]) -> list[dict]:
    """The files that share a member's bytes: duplicates of it once it loaded, else as bad as it."""
    rows = []
    for m in todo:
        r = results[m.source_id]
        for alias in m.aliases:
            loaded = r.status == "loaded"
            rows.append(ItemResult(display_path(alias.path), "duplicate" if loaded else r.status, m.source_id,
                                   stage=None if loaded else r.stage,
                                   reason=f"same bytes as {r.path}" if loaded else f"{r.reason} (the same bytes as {r.path})",
                                   kind=m.item.kind).to_dict())
    return rows


def _commit(unit: Unit, done: list[_Done], writer: PartitionWriter, extractor: Extractor,
            ctx: BuildContext, wh: Warehouse, results: dict[str, ItemResult]) -> None:
    videos, labels = [], []
    for d in done:
        videos += _video_rows(d, extractor, ctx)
        labels += label_rows(list(d.stats.per_video), d.member.source_id, d.member.label)
    with file_lock(wh, unit.key):
        writer.commit()
        failpoint("frames-written", done[0].member.item.path)
        commit_unit(wh, unit.key, videos, labels)
    for d in done:
        r = results[d.member.source_id]
        r.status, r.frames, r.face_frames = "loaded", d.stats.frames, d.stats.face_frames
        r.partial = bool(d.meta.extra.get("partial"))
        if r.partial:
            r.reason = d.meta.extra["note"]


def _settle(unit: Unit, todo: list[Member], results: dict[str, ItemResult], ctx: BuildContext,
            wh: Warehouse) -> None:
    """After the commit: quarantine rows for bad members, duplicate links, and the contents these
    paths held before (dropped, or handed to a duplicate) — loaded or not, each path now has one
    state. The inventory is caught up once, and again only after a member changed it (a
    listing of three tables per member was half of this for a shard of new images)."""
    inv = None
    for m in todo:
        r = results[m.source_id]
        if r.status == "quarantined":
            quarantine_item(wh, m.item.path, r.stage or "extract", r.reason or "", ctx.run_id, m.source_id,
                            m.stat, unit_cache_key(unit, ctx), ctx.source_root)
            for alias in m.aliases:
                quarantine_item(wh, alias.path, r.stage or "extract",
                                f"{r.reason} (the same bytes as {r.path})", ctx.run_id,
                                m.source_id, alias.stat, unit_cache_key(unit, ctx), ctx.source_root)
            inv = None
        loaded = r.status == "loaded"
        if loaded and inv is None:
            inv = inventory(wh)
        if after_commit(wh, m, unit.key if loaded else None, ctx.run_id, inv):
            inv = None


def unit_cache_key(unit: Unit, ctx: BuildContext) -> str:
    extractor = worker_extractor(unit.extractor, ctx.extractor_options.get(unit.extractor, {}))
    return f"{extractor.config_hash(ctx.options)}|{CONTRACT_VERSION}"
