"""Stage: the first video's extraction, started while Prefect loads.

`affectflow build-features` spends its first ~2 s importing Prefect and starting the flow run, on
one core, before any frame is read. For the file the CLI's stat-only plan found to be new
(`tasks.plan.NeedsReading`), when it is a video and units run in this process's threads, `start`
begins that work at once in a thread of its own: hash, model load, decode and detection, the
same `Extractor.extract` the task would call. The flow's task for that video `claim`s it (same
path, size, mtime, content id, extractor and options) and takes its batches as they come,
validating and writing them as usual; nothing reaches the warehouse before the flow run does.
A head start nobody claims (the file changed, it turned out to be a duplicate, the run failed to
start) is stopped and dropped by `discard` when the run ends. An error in the extraction itself
reaches the claiming task from the same generator call it would have made, so a bad video is
quarantined exactly as without a head start.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from tasks.extractors import get_extractor
from tasks.extractors.base import ExtractOptions, ItemMeta
from tasks.media import MediaItem, content_hash

log = logging.getLogger(__name__)
QUEUED_BATCHES = 2  # batches held before the task claims them (2,048 rows each: ~14 MB apiece)
_END = object()


@dataclass(frozen=True)
class AheadKey:
    """What must match for a task to take a head start's rows as its own."""

    path: str
    bytes: int
    mtime_ns: int
    extractor: str
    extractor_options: str  # JSON, sorted keys
    options: ExtractOptions

    @classmethod
    def of(cls, path: Path, stat: tuple[int, int], extractor: str, extractor_options: dict,
           options: ExtractOptions) -> AheadKey:
        return cls(str(path), stat[0], stat[1], extractor, json.dumps(extractor_options, sort_keys=True, default=str),
                   options)


@dataclass
class _Ahead:
    key: AheadKey
    item: MediaItem
    meta: ItemMeta = field(default_factory=ItemMeta)
    source_id: str | None = None  # known once hashed
    hashed: threading.Event = field(default_factory=threading.Event)
    batches: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=QUEUED_BATCHES))
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def run(self, extractor_options: dict) -> None:
        try:
            self.source_id = content_hash(self.item.path)
        except Exception:  # the plan meets the same problem and reports it
            return
        finally:
            self.hashed.set()
        try:
            extractor = get_extractor(self.key.extractor, **extractor_options)
        except Exception:  # the task builds its own extractor and reports what is wrong
            log.debug("no head start for %s", self.item.path, exc_info=True)
            self.source_id = None
            return
        self.meta.extra["stop"] = self.stop  # `tasks.media._decode` checks it every frame
        rows = extractor.extract(self.item, self.source_id, self.key.options, self.meta)
        try:
            for batch in rows:
                if not self._put(batch):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the task, raised where its own call would raise
            self._put(exc)
        finally:
            getattr(rows, "close", lambda: None)()  # a generator: its decoder and landmarker end now
            extractor.close()

    def _put(self, entry: object) -> bool:
        while not self.stop.is_set():
            try:
                self.batches.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def rows(self, meta: ItemMeta) -> Iterator[pa.RecordBatch]:
        """The batches, as the extractor's generator would give them; `meta` gets what the
        extractor learnt (frame size, frames read)."""
        try:
            while True:
                entry = self.batches.get()
                if entry is _END:
                    break
                if isinstance(entry, BaseException):
                    raise entry
                yield entry  # type: ignore[misc]
        finally:
            self.stop.set()
            if self.thread is not None:
                self.thread.join()
        meta.width = meta.width if meta.width is not None else self.meta.width
        meta.height = meta.height if meta.height is not None else self.meta.height
        meta.extra.update({k: v for k, v in self.meta.extra.items() if k != "stop"})


_lock = threading.Lock()
_pending: dict[AheadKey, _Ahead] = {}


def start(item: MediaItem, extractor: str, extractor_options: dict, options: ExtractOptions) -> AheadKey | None:
    """Begin extracting `item` (a video) in a background thread; its key, or None when the
    file cannot even be stat'ed (the plan will say why)."""
    try:
        st = item.path.stat()
    except OSError:
        return None
    key = AheadKey.of(item.path, (st.st_size, st.st_mtime_ns), extractor, extractor_options, options)
    ahead = _Ahead(key, item)
    ahead.thread = threading.Thread(target=ahead.run, args=(extractor_options,), name="extract-ahead", daemon=True)
    with _lock:
        if key in _pending:
            return key
        _pending[key] = ahead
    ahead.thread.start()
    return key


def pending() -> bool:
    """Whether any head start waits to be claimed (cheap: asked before every video)."""
    return bool(_pending)


def started(path: Path) -> bool:
    """Whether a head start for this path is waiting to be claimed."""
    with _lock:
        return any(k.path == str(path) for k in _pending)


def claim(key: AheadKey, source_id: str) -> _Ahead | None:
    """The head start for exactly this file content and settings, taken out of the pending
    ones (so it is claimed once); None when there is none."""
    with _lock:
        ahead = _pending.pop(key, None)
    if ahead is None:
        return None
    ahead.hashed.wait()
    if ahead.source_id != source_id:  # changed between the two looks, or no extractor: not these rows
        _stop(ahead)
        return None
    return ahead


def discard() -> None:
    """Stop and drop every head start nobody claimed (the run is over)."""
    with _lock:
        left = list(_pending.values())
        _pending.clear()
    for ahead in left:
        _stop(ahead)


def _stop(ahead: _Ahead) -> None:
    ahead.stop.set()
    if ahead.thread is not None:
        ahead.thread.join()
