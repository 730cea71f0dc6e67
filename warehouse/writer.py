"""Atomic Parquet writes: write a temporary file beside the target, fsync, rename.

A rename within one directory is atomic on POSIX, so readers see the old file or the new one,
never half of either. Temporary files start with `.` so the `*.parquet` globs never match them.
An object-store target (`warehouse.storage.ObjectPath`) has no rename: its temporary file is
local and is uploaded as one object, which the store makes visible whole or not at all.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from data_contracts.columns import Table
from warehouse.storage import ObjectPath, StoragePath, staging_path, upload, writing

COMPRESSION = "zstd"
# Rows per Parquet row group. Few, large row groups keep the file footer (one entry per column per
# row group, ~800 columns in `frames`) small; the writer buffers at most one row group.
ROW_GROUP_ROWS = 32_768
Target = TypeVar("Target", bound=StoragePath)  # a local Path in, a local Path out


def _tmp_path(target: StoragePath) -> Path:
    if isinstance(target, ObjectPath):
        return staging_path(target, uuid.uuid4().hex[:8])
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")


def _fsync_and_rename(tmp: Path, target: Path) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def _publish(tmp: Path, target: StoragePath) -> None:
    """Make the finished temporary file the target: rename it, or upload it as one object."""
    if isinstance(target, ObjectPath):
        upload(tmp, target)
        tmp.unlink()
    else:
        _fsync_and_rename(tmp, target)


def write_atomic(target: Target, table: pa.Table) -> Target:
    """Write one Arrow table to `target` atomically (`StorageError` when there is no room)."""
    tmp = _tmp_path(target)
    try:
        with writing(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, tmp, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
            _publish(tmp, target)
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()
    return target


class PartitionWriter:
    """Stream record batches into one Parquet file that appears only on `commit()`.

    Memory stays bounded by one buffered row group; an exception (or a kill) leaves only a
    hidden temporary file, which `sweep_temporary` removes on the next run.
    """

    def __init__(self, target: StoragePath, schema: pa.Schema):
        self.target = target
        self.schema = schema
        self.rows = 0
        self._tmp = _tmp_path(target)
        with writing(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self._tmp, schema, compression=COMPRESSION)
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            raise RuntimeError(f"writer for {self.target} is closed")
        if batch.num_rows:
            self._buffer.append(batch)
            self._buffered += batch.num_rows
            self.rows += batch.num_rows
            if self._buffered >= ROW_GROUP_ROWS:
                self._flush()

    def _flush(self) -> None:
        if self._buffer and self._writer is not None:
            with writing(self.target):
                self._writer.write_table(pa.Table.from_batches(self._buffer), row_group_size=ROW_GROUP_ROWS)
            self._buffer, self._buffered = [], 0

    def commit(self) -> StoragePath:
        if self._writer is None:
            raise RuntimeError(f"writer for {self.target} is closed")
        self._flush()
        with writing(self.target):
            self._writer.close()
            self._writer = None
            _publish(self._tmp, self.target)
        return self.target

    def abort(self) -> None:
        self._buffer = []
        if self._writer is not None:
            with suppress(OSError):  # a full disk fails the close too; the file goes anyway
                self._writer.close()
            self._writer = None
        with suppress(FileNotFoundError):
            self._tmp.unlink()

    def __enter__(self) -> PartitionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer is not None:
            self.abort()


def rows_to_table(table: Table, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build an Arrow table in the contract's schema from dict rows (absent keys are null)."""
    rows = list(rows)
    unknown = {k for r in rows for k in r} - set(table.names)
    if unknown:
        raise ValueError(f"table {table.name}: columns not in the contract: {sorted(unknown)}")
    columns = {c.name: pa.array([r.get(c.name) for r in rows], type=c.arrow_type) for c in table.columns}
    return pa.Table.from_pydict(columns, schema=table.arrow_schema())


def temporary_key(tmp: Path) -> str:
    """The key of the file a temporary file was going to become (`.<key>.parquet.<id>.tmp`)."""
    return tmp.name[1:].split(".parquet.", 1)[0]


def sweep_temporary(directory: StoragePath, can_remove: Callable[[Path], bool]) -> int:
    """Remove temporary files left by a killed writer, where `can_remove(tmp)` says no live
    writer still owns them. Returns how many were removed. (An object store holds none: its
    writers stage in local temporary files and upload whole objects.)"""
    if isinstance(directory, ObjectPath):
        return 0
    removed = 0
    for tmp in directory.glob(".*.tmp"):
        if can_remove(tmp):
            with suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
    return removed
