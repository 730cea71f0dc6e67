"""Writing units of work into the warehouse, removing what files no longer hold, quarantining
bad files, recording runs.

Commit order for a unit (one video, or a shard of small items; its three files share a key):
frames -> labels -> videos. The `videos` file is the commit mark: a kill before it leaves files
with no `videos` file of their key, which `sweep_orphans` removes at the next run's start, and
the re-run writes the same key again. Removing contents from a file rewrites it in the same
order (frames first, `videos` last), so an interrupted removal leaves a `videos` row whose path
now holds other bytes: the next run that sees that path removes it again.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from data_contracts import DUPLICATES, LABELS, QUARANTINE, RUNS, VIDEOS
from tasks.errors import ItemError
from tasks.item_slots import item_slot, item_slots
from tasks.labels import Label
from tasks.media import display_path, open_regular
from warehouse import Warehouse
from warehouse.storage import read_table, settled, writing
from warehouse.writer import rows_to_table, sweep_temporary, temporary_key, write_atomic

if TYPE_CHECKING:
    from warehouse.inventory import Inventory

QUARANTINE_COPY_MAX_BYTES = 256 * 1024 * 1024
ITEM_TABLES = ("frames", "videos", "labels")  # files keyed by a unit's key, written under its file lock
STALE_TMP_S = 600


def now() -> datetime:
    return datetime.now(UTC)


def item_id(path: Path) -> str:
    return hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:20]


@contextmanager
def item_lock(wh: Warehouse, key: str, blocking: bool = True, slot: bool = True) -> Iterator[bool]:
    """An exclusive per-item lock, so overlapping runs never write one item at once.

    A file lock under `home` excludes the processes of one machine (or of all machines that
    share `home` on a filesystem with `flock`). When the warehouse is on an object store, which
    machines share without sharing `home`, the item also holds a slot on the Prefect server
    (`tasks.item_slots`), taken after the file lock so a machine's own processes queue locally."""
    fd = _open_lock(wh.home / "locks" / "items", key)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            if isinstance(wh.root, Path) or not slot:
                yield True
            else:
                with item_slot(key, blocking) as held:
                    yield held
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open_lock(lock_dir: Path, key: str) -> int:
    """The lock file's descriptor: a bare `os.open`, its folder made only when missing (a
    buffered text file and a mkdir per lock were ~1 ms of every image of a folder)."""
    path = lock_dir / f"{key}.lock"
    with writing(lock_dir):
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            lock_dir.mkdir(parents=True, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


@contextmanager
def file_lock(wh: Warehouse, key: str) -> Iterator[None]:
    """Exclusive use of the files named `key` on this machine (a shard's files are rewritten by
    whichever run removes or relabels one of its items). Taken after unit locks, never before.
    (On an object store, two machines rewriting one shard at the same moment are not kept apart.)"""
    with item_lock(wh, f"file.{key}", slot=False):
        yield


@contextmanager
def unit_locks(wh: Warehouse, keys: set[str]) -> Iterator[None]:
    """Every lock a unit of work holds while it runs: the file lock of each member's content and
    of the unit's key (sorted, so units never deadlock), and on an object store the Prefect item
    slots of their stripes, all taken at once in sorted order (never more later)."""
    with ExitStack() as stack:
        for key in sorted(keys):
            stack.enter_context(item_lock(wh, key, slot=False))
        if not isinstance(wh.root, Path):
            stack.enter_context(item_slots(keys))
        yield


def commit_unit(wh: Warehouse, key: str, videos: list[dict], labels: list[dict]) -> None:
    """Write a unit's labels, then its videos rows (the commit mark); its frames file is
    already in place."""
    write_atomic(wh.file_for("labels", key), rows_to_table(LABELS, labels))
    write_atomic(wh.file_for("videos", key), rows_to_table(VIDEOS, videos))


def _rewrite(wh: Warehouse, table: str, key: str, keep) -> int:
    """Rewrite one table's file of `key` keeping the rows `keep` selects; delete it when none
    stay. Returns the rows removed."""
    path = wh.file_for(table, key)
    try:
        data = read_table(path)
    except FileNotFoundError:
        return 0
    mask = keep(data)
    kept = data.filter(mask)
    if kept.num_rows == data.num_rows:
        return 0
    if kept.num_rows == 0:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, kept.cast(wh.table(table).arrow_schema()))
    return data.num_rows - kept.num_rows


def drop_contents(wh: Warehouse, source_ids: set[str], keys: list[str]) -> int:
    """Remove every row of these contents from the files `keys` (frames first, videos last)."""
    import pyarrow.compute as pc

    removed = 0
    wanted = pa.array(sorted(source_ids), pa.string())
    for key in sorted(set(keys)):
        with file_lock(wh, key):
            if _only(wh, key, source_ids):  # a video's own files: no need to read its frames
                for table in ("frames", "labels", "videos"):
                    wh.file_for(table, key).unlink(missing_ok=True)
                removed += 1
                continue
            for table in ("frames", "labels", "videos"):
                removed += _rewrite(wh, table, key, lambda t: pc.invert(pc.is_in(t["source_id"], wanted)))
    return removed


def _only(wh: Warehouse, key: str, source_ids: set[str]) -> bool:
    """Whether every row of the files `key` belongs to these contents (by its `videos` rows)."""
    try:
        held = set(read_table(wh.file_for("videos", key), columns=["source_id"])["source_id"].to_pylist())
    except FileNotFoundError:
        return False
    return bool(held) and held <= source_ids


def _update_rows(wh: Warehouse, table: str, key: str, source_id: str, changes: dict) -> None:
    import pyarrow.compute as pc

    path = wh.file_for(table, key)
    data = read_table(path)
    hit = pc.equal(data["source_id"], source_id)
    columns = {}
    for name in data.column_names:
        column = data[name]
        if name in changes:
            value = pa.scalar(changes[name], type=column.type)
            column = pc.if_else(hit, value, column)
        columns[name] = column
    write_atomic(path, pa.table(columns).cast(wh.table(table).arrow_schema()))


def record_stats(wh: Warehouse, key: str, stats: dict[str, tuple[int, int]]) -> None:
    """New size and modification time for loaded contents of one file (their bytes are the
    same, their time changed): one rewrite of its `videos` file for all of them."""
    with file_lock(wh, key):
        path = wh.file_for("videos", key)
        data = read_table(path)
        ids = data["source_id"].to_pylist()
        sizes = [stats[i][0] if i in stats else v for i, v in zip(ids, data["bytes"].to_pylist(), strict=True)]
        times = [stats[i][1] if i in stats else v
                 for i, v in zip(ids, (data["mtime_ns"].to_pylist() if "mtime_ns" in data.column_names
                                       else [None] * len(ids)), strict=True)]
        data = data.set_column(data.schema.get_field_index("bytes"), "bytes", pa.array(sizes, pa.int64()))
        if "mtime_ns" in data.column_names:
            data = data.set_column(data.schema.get_field_index("mtime_ns"), "mtime_ns", pa.array(times, pa.int64()))
        write_atomic(path, data.cast(wh.table("videos").arrow_schema()))


def relabel(wh: Warehouse, key: str, source_id: str, label: Label) -> None:
    """Give a loaded content new labels (its `labels` rows, in place)."""
    with file_lock(wh, key):
        _update_rows(wh, "labels", key, source_id, {
            "emotion": label.emotion, "stress": label.stress, "valence": label.valence,
            "arousal": label.arousal, "subject_id": label.subject_id, "label_source": label.source})


def relink(wh: Warehouse, key: str, source_id: str, path: Path, size: int, mtime_ns: int,
           label: Label | None = None) -> None:
    """Make `path` the canonical file of a loaded content (it moved, or its old file changed)."""
    with file_lock(wh, key):
        _update_rows(wh, "videos", key, source_id, {"path": str(path), "bytes": size, "mtime_ns": mtime_ns})
    if label is not None:
        relabel(wh, key, source_id, label)
    unlink_duplicate(wh, path)
    clear_quarantine(wh, path)


def stored_label(wh: Warehouse, key: str, source_id: str) -> Label | None:
    """The labels the warehouse has for a loaded content (its first row), or None."""
    try:
        data = read_table(wh.file_for("labels", key))
    except FileNotFoundError:
        return None
    for row in data.to_pylist():
        if row["source_id"] == source_id:
            return Label(row["emotion"], row["stress"], row["valence"], row["arousal"], row["subject_id"],
                         row["label_source"])
    return None


def link_duplicate(wh: Warehouse, path: Path, source_id: str, same_as: str, size: int, mtime_ns: int,
                   run_id: str, label_conflict: str | None = None) -> None:
    row = {"item_id": item_id(path), "path": display_path(path), "source_id": source_id, "same_as": same_as,
           "bytes": size, "mtime_ns": mtime_ns, "label_conflict": label_conflict, "run_id": run_id,
           "seen_at": now()}
    write_atomic(wh.file_for("duplicates", item_id(path)), rows_to_table(DUPLICATES, [row]))
    clear_quarantine(wh, path)


def unlink_duplicate(wh: Warehouse, path: Path) -> None:
    with suppress(FileNotFoundError):
        wh.file_for("duplicates", item_id(path)).unlink()


def promote(wh: Warehouse, source_id: str, heir: str) -> None:
    """A duplicate takes over as the canonical file of content whose canonical file changed."""
    from warehouse.inventory import inventory

    inv = inventory(wh)
    held = inv.loaded(source_id)
    if held is None:
        return
    try:
        st = os.stat(heir)
    except OSError:
        drop_contents(wh, {source_id}, inv.keys_of(source_id))
        return
    relink(wh, held.key, source_id, Path(heir), st.st_size, st.st_mtime_ns)


def after_commit(wh: Warehouse, member, loaded_key: str | None, run_id: str,
                 inv: Inventory | None = None) -> bool:
    """What a member's new state changes beyond its own rows: stale copies of its content in
    other files, the contents its path held before, its duplicates' links, its old records.
    `inv`: the inventory, caught up since the last change (read here when not given); returns
    whether this changed what it holds (so the next member's must be read again)."""
    from warehouse.inventory import inventory

    path = member.item.path
    changed = False
    if loaded_key is not None:
        inv = inv if inv is not None else inventory(wh)
        stale = [k for k in inv.keys_of(member.source_id) if k != loaded_key]
        if stale:
            drop_contents(wh, {member.source_id}, stale)
        for alias in member.aliases:
            link_duplicate(wh, alias.path, member.source_id, str(path), alias.stat.bytes, alias.stat.mtime_ns,
                           run_id, alias.label_conflict)
        unlink_duplicate(wh, path)
        clear_quarantine(wh, path)
        changed = bool(stale or member.aliases)
    return release(wh, list(member.replaces), list(member.promote)) or changed


def release(wh: Warehouse, drops: list[str], promotions: list[tuple[str, str]]) -> bool:
    """Contents no file holds any more go; those a duplicate still holds move to it. Returns
    whether there was anything to do."""
    from warehouse.inventory import inventory

    if not drops and not promotions:
        return False
    inv = inventory(wh)
    if drops:
        keys = [k for s in drops for k in inv.keys_of(s)]
        drop_contents(wh, set(drops), keys)
    for source_id, heir in promotions:
        promote(wh, source_id, heir)
    return True


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
                    source_id: str | None = None, stat=None, cache_key: str | None = None,
                    source_root: Path | None = None) -> dict:
    """Record a bad item and return its row, with the size and time it had and the settings it
    failed with (an unchanged bad file is not tried again with the same settings). A copy of the
    file is kept only when it is part of the source being built (`source_root`: the folder, or
    the file itself); without one (e.g. a refused manifest row, which may name any path) nothing
    is copied."""
    key = item_id(path)
    target = _copy_target(wh, path)
    copied = _copy_into_quarantine(path, target, source_root)
    row = {"item_id": key, "path": display_path(path), "source_id": source_id, "stage": stage,
           "reason": reason, "copy_path": str(target) if copied else None, "run_id": run_id,
           "quarantined_at": now(), "bytes": getattr(stat, "bytes", None),
           "mtime_ns": getattr(stat, "mtime_ns", None), "cache_key": cache_key}
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
    for table in ("frames", "labels"):
        for orphan in wh.files(table):
            key = orphan.stem
            if key in committed:
                continue
            with item_lock(wh, f"file.{key}", blocking=False) as locked:
                if locked and not wh.file_for("videos", key).exists() and settled(orphan, STALE_TMP_S):
                    with suppress(FileNotFoundError):
                        orphan.unlink()
                        removed += 1
    return removed
