"""The one interface every extractor implements, and the batch builder they share.

An extractor turns one media item into Arrow record batches in the `frames` contract schema,
streaming: it holds at most one batch of rows, so memory does not grow with video length.
"""

from __future__ import annotations

import functools
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from data_contracts import FRAMES
from tasks.media import MediaItem

BATCH_ROWS = 2048
_KEYS = ("source_id", "video_id", "frame", "face_id", "timestamp", "success", "confidence")
_FEATURES = [c for c in FRAMES.columns if c.name not in _KEYS]


@dataclass
class ItemMeta:
    """What an extractor learns about an item while reading it (filled in as it goes)."""

    kind: str = "video"  # "video" | "image" | "openface-image" | "openface-video"
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtractOptions:
    fps: float | None = None
    max_frames: int | None = None
    min_confidence: float = 0.7


class Extractor(ABC):
    """Base class: a name, a version, a config that changes the output, and `extract`."""

    name: str = ""
    kinds: tuple[str, ...] = ()  # MediaItem kinds it reads

    @property
    @abstractmethod
    def version(self) -> str: ...

    def config(self) -> dict[str, Any]:
        """Everything that changes this extractor's output (recorded, and part of cache keys)."""
        return {}

    def config_hash(self, options: ExtractOptions) -> str:
        payload = {"extractor": self.name, "version": self.version, "config": self.config(),
                   "fps": options.fps, "max_frames": options.max_frames,
                   "min_confidence": options.min_confidence}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def check_ready(self) -> None:
        """Raise `SetupError` before any work when the extractor cannot run (e.g. no weights)."""
        return None

    @abstractmethod
    def extract(
        self, item: MediaItem, source_id: str, options: ExtractOptions, meta: ItemMeta
    ) -> Iterator[pa.RecordBatch]:
        """Yield record batches in `FRAMES.arrow_schema()`; raise `ItemError` for bad input."""

    def close(self) -> None:
        """Release models and threads."""
        return None


class ImageAdder(ABC):
    """An extractor that also takes decoded still images one by one: a shard of images becomes
    one batch of rows built once (not one per image). Extractors without it read each image
    through `extract`."""

    @abstractmethod
    def add_image(self, rgb: np.ndarray, video_id: str, source_id: str, builder: FrameBatchBuilder) -> None:
        """The rows of one RGB image into `builder`."""


class FrameBatchBuilder:
    """Collects per-frame rows column-wise and emits contract-schema record batches.

    Rows with `success` 0 get every feature null whatever was passed: extractors (OpenFace in
    particular) leave garbage there. Columns never set are null, never zero.
    """

    def __init__(self, source_id: str, batch_rows: int = BATCH_ROWS):
        self.source_id = source_id
        self.batch_rows = batch_rows
        self.schema = FRAMES.arrow_schema()
        self._reset()

    def _reset(self) -> None:
        self._keys: dict[str, list[Any]] = {k: [] for k in _KEYS if k != "source_id"}
        self._sources: list[str] = []
        self._values: dict[str, np.ndarray] = {}
        self.n = 0

    def add(self, video_id: str, frame: int, face_id: int, timestamp: float, success: bool,
            confidence: float | None, features: Mapping[str, float] | None = None,
            source_id: str | None = None) -> None:
        """One row; `source_id` defaults to the builder's (a shard's builder holds many items)."""
        row = self.n
        self._sources.append(source_id or self.source_id)
        for key, value in (("video_id", video_id), ("frame", frame), ("face_id", face_id),
                           ("timestamp", timestamp), ("success", 1 if success else 0),
                           ("confidence", confidence)):
            self._keys[key].append(value)
        if success and features:
            for name, value in features.items():
                column = self._values.get(name)
                if column is None:
                    if name not in FRAMES.by_name:
                        raise KeyError(f"extractor produced column {name!r} that the contract lacks")
                    column = self._values[name] = np.full(self.batch_rows, np.nan, dtype=np.float32)
                column[row] = np.nan if value is None else value
        self.n += 1

    def full(self) -> bool:
        return self.n >= self.batch_rows

    def flush(self) -> pa.RecordBatch | None:
        if self.n == 0:
            return None
        n = self.n
        features = {name: values[:n] for name, values in self._values.items()}
        sources = self.source_id if all(s == self.source_id for s in self._sources) else self._sources
        batch = frames_batch(sources, self._keys, features)
        self._reset()
        return batch


@functools.lru_cache(maxsize=256)
def _nulls(n: int, arrow_type: pa.DataType) -> pa.Array:
    """An all-null column (immutable, so shared by every batch of that length: most of the
    ~800 columns of a batch are null, and making each anew cost more than the detector on small images)."""
    return pa.nulls(n, arrow_type)


def frames_batch(source_id: str | list[str], keys: Mapping[str, Any],
                 features: Mapping[str, np.ndarray]) -> pa.RecordBatch:
    """A `frames` record batch from key columns and float feature arrays (NaN = null); one
    `source_id` for every row, or one per row.

    Every feature is nulled on rows whose `success` is 0; columns not given are all null.
    """
    success = np.asarray(keys["success"], dtype=np.int8)
    n = len(success)
    failed = success == 0
    sources = [source_id] * n if isinstance(source_id, str) else source_id
    arrays: list[pa.Array] = [pa.array(sources, pa.string())]
    for key in _KEYS[1:]:
        arrays.append(pa.array(np.asarray(keys[key]) if key != "confidence" else keys[key],
                               type=FRAMES.by_name[key].arrow_type, from_pandas=True))
    for col in _FEATURES:
        values = features.get(col.name)
        if values is None:
            arrays.append(_nulls(n, col.arrow_type))
            continue
        values = np.asarray(values, dtype=np.float32)
        arrays.append(pa.array(values, type=col.arrow_type, mask=np.isnan(values) | failed))
    return pa.RecordBatch.from_arrays(arrays, schema=FRAMES.arrow_schema())
