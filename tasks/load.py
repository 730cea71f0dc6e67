"""Writing one item's results into the warehouse, quarantining bad items, recording runs.

Commit order for an item: frames file (atomic rename) -> videos rows -> labels rows -> path
pointer; then its quarantine entry is cleared. A kill between steps leaves a frames file with no
videos row; `sweep_orphans` removes those at the next run's start, and re-extraction rewrites
the same file names, so the warehouse ends up as after an uninterrupted run.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from data_contracts import LABELS, QUARANTINE, RUNS, VIDEOS
from tasks.errors import ItemError
from tasks.item_slots import item_slot
from tasks.media import display_path, open_regular
from warehouse import Warehouse
from warehouse.storage import read_table, settled
from warehouse.writer import rows_to_table, sweep_temporary, temporary_key, write_atomic

QUARANTINE_COPY_MAX_BYTES = 256 * 1024 * 1024
ITEM_TABLES = ("frames", "videos", "labels")  # files keyed by source_id, written under its lock
STALE_TMP_S = 600


def now() -> datetime:
    return datetime.now(UTC)


def item_id(path: Path) -> str:
    return hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:20]


@contextmanager
def item_lock(wh: Warehouse, key: str, blocking: bool = True) -> Iterator[bool]:
    """An exclusive per-item lock, so overlapping runs never write one item at once.

    A file lock under `home` excludes the processes of one machine (or of all machines that
    share `home` on a filesystem with `flock`). When the warehouse is on an object store, which
    machines share without sharing `home`, the item also holds a slot on the Prefect server
    (`tasks.item_slots`), taken after the file lock so a machine's own processes queue locally."""
    lock_dir = wh.home / "locks" / "items"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{key}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            if isinstance(wh.root, Path):
                yield True
            else:
                with item_slot(key, blocking) as held:
                    yield held
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def loaded_config(wh: Warehouse, source_id: str) -> str | None:
    """The config hash the item was loaded with, or None when it is not (fully) loaded."""
    path = wh.file_for("videos", source_id)
    if not (path.exists() and wh.file_for("frames", source_id).exists()):
        return None
    table = read_table(path, columns=["config_hash", "contract_version"])
    if table.num_rows == 0:
        return None
    return f"{table['config_hash'][0].as_py()}|{table['contract_version'][0].as_py()}"


def _remove_source(wh: Warehouse, source_id: str) -> None:
    for table in ("frames", "videos", "labels"):
        with suppress(FileNotFoundError):
            wh.file_for(table, source_id).unlink()


def commit_item(wh: Warehouse, path: Path, source_id: str, videos: list[dict], labels: list[dict]) -> None:
    """Write an item's videos and labels rows (its frames file is already in place), replace
    what an older version of the same path left, and clear its quarantine entry."""
    write_atomic(wh.file_for("videos", source_id), rows_to_table(VIDEOS, videos))
    write_atomic(wh.file_for("labels", source_id), rows_to_table(LABELS, labels))
    pointer_dir = wh.home / "index" / "paths"
    pointer_dir.mkdir(parents=True, exist_ok=True)
    pointer = pointer_dir / item_id(path)
    previous = pointer.read_text().strip() if pointer.exists() else None
    if previous and previous != source_id:
        _remove_source(wh, previous)  # the file at this path changed: its old rows go
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(source_id)
    os.replace(tmp, pointer)
    clear_quarantine(wh, path)


def _copy_target(wh: Warehouse, path: Path) -> Path:
    """Where the quarantine copy of the item at `path` goes (one name per path)."""
    return wh.home / "quarantine" / "files" / f"{item_id(path)}{path.suffix[:16]}"


def clear_quarantine(wh: Warehouse, path: Path) -> None:
    """The item at `path` loaded: its quarantine entry and its copy go."""
    for stale in (wh.file_for("quarantine", item_id(path)), _copy_target(wh, path)):
        with suppress(FileNotFoundError):
            stale.unlink()


def _part_of(path: Path, source_root: Path) -> bool:
    """Whether `path` lies inside `source_root` (a folder, or the one file being built) once
    links are resolved: a link out of the source is not part of it."""
    real, root = os.path.realpath(path), os.path.realpath(source_root)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _copy_into_quarantine(path: Path, target: Path, source_root: Path | None) -> bool:
    """Copy the bad file for inspection when it is a regular file of the source no bigger than
    `QUARANTINE_COPY_MAX_BYTES`; any older copy for this path goes either way."""
    with suppress(FileNotFoundError):
        target.unlink()
    if source_root is None or not _part_of(path, source_root):
        return False
    try:
        with open_regular(path) as src:
            if os.fstat(src.fileno()).st_size > QUARANTINE_COPY_MAX_BYTES:
                return False
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    except (OSError, ItemError):
        with suppress(FileNotFoundError):
            target.unlink()
        return False
    return True


def quarantine_item(wh: Warehouse, path: Path, stage: str, reason: str, run_id: str,
                    source_id: str | None = None, source_root: Path | None = None) -> dict:
    """Record a bad item and return its row. A copy of the file is kept only when it is part of
    the source being built (`source_root`: the folder, or the file itself); without one (e.g. a
    refused manifest row, which may name any path) nothing is copied."""
    key = item_id(path)
    target = _copy_target(wh, path)
    copied = _copy_into_quarantine(path, target, source_root)
    row = {"item_id": key, "path": display_path(path), "source_id": source_id, "stage": stage,
           "reason": reason, "copy_path": str(target) if copied else None, "run_id": run_id,
           "quarantined_at": now()}
    write_atomic(wh.file_for("quarantine", key), rows_to_table(QUARANTINE, [row]))
    return row


def record_run(wh: Warehouse, row: dict) -> None:
    write_atomic(wh.file_for("runs", row["run_id"]), rows_to_table(RUNS, [row]))


def _abandoned(wh: Warehouse, table: str, tmp: Path) -> bool:
    """Whether no live writer owns `tmp`: per-item files are written under the item's lock (so a
    free lock means the writer is gone); other tables' files are small and written in moments."""
    if table in ITEM_TABLES:
        with item_lock(wh, temporary_key(tmp), blocking=False) as locked:
            return locked
    try:
        return time.time() - tmp.stat().st_mtime > STALE_TMP_S
    except FileNotFoundError:
        return False


def sweep_orphans(wh: Warehouse) -> int:
    """Remove leftovers of a killed run: temporary files, and frames files whose item never got
    its videos row. Items locked by a run in progress are left alone."""
    removed = 0
    for table in wh.tables:
        removed += sweep_temporary(wh.table_dir(table), functools.partial(_abandoned, wh, table))
    committed = {p.stem for p in wh.files("videos")}
    for frames_file in wh.files("frames"):
        source_id = frames_file.stem
        if source_id in committed:
            continue
        with item_lock(wh, source_id, blocking=False) as locked:
            if locked and not wh.file_for("videos", source_id).exists() and settled(frames_file, STALE_TMP_S):
                with suppress(FileNotFoundError):
                    frames_file.unlink()
                    removed += 1
    return removed
