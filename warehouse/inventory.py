"""What the warehouse holds, by path and by content: the index a build-features run plans from.

A run reads the `videos`, `duplicates` and `quarantine` tables once (a few columns of each
file: one file per shard of small items, per video, or per bad/duplicate path) and answers:
which content does this path hold now, is this content loaded and with which settings, in which
file are its rows. `refresh()` re-reads only the files written or removed since the last look
(one folder listing each), which is how a unit of work sees what another run committed while
it waited for its locks.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa

from warehouse.layout import Warehouse
from warehouse.storage import FileState, list_files, read_columns

VIDEO_COLUMNS = ["source_id", "path", "config_hash", "contract_version", "bytes", "mtime_ns"]
DUPLICATE_COLUMNS = ["path", "source_id", "same_as", "bytes", "mtime_ns"]
QUARANTINE_COLUMNS = ["path", "source_id", "stage", "reason", "bytes", "mtime_ns", "cache_key"]


@dataclass(frozen=True)
class Held:
    """One loaded content: its file key (where its rows are), the path it was loaded from, the
    settings it was loaded with (`cache_key`) and that file's size and time then."""

    source_id: str
    key: str
    path: str
    cache_key: str
    bytes: int | None
    mtime_ns: int | None


@dataclass(frozen=True)
class Linked:
    """A file recorded as a duplicate of loaded content."""

    path: str
    source_id: str
    same_as: str
    bytes: int | None
    mtime_ns: int | None


@dataclass(frozen=True)
class Bad:
    """A quarantined file, with what it failed with."""

    path: str
    source_id: str | None
    stage: str
    reason: str
    bytes: int | None
    mtime_ns: int | None
    cache_key: str | None


def cache_key(config_hash: str | None, contract_version: str | None) -> str:
    return f"{config_hash}|{contract_version}"


def _columns(table: pa.Table, names: list[str]) -> list[list]:
    """The named columns as Python lists; a column an older file lacks reads as nulls."""
    return [table.column(n).to_pylist() if n in table.column_names else [None] * table.num_rows for n in names]


class _TableFiles:
    """The rows of one table's files, keyed by file name, re-read only when a file changes."""

    def __init__(self, wh: Warehouse, table: str, columns: list[str]):
        self.wh, self.table, self.columns = wh, table, columns
        self.states: dict[str, FileState] = {}
        self.rows: dict[str, list[tuple]] = {}

    def refresh(self) -> tuple[dict[str, list[tuple]], dict[str, list[tuple]]]:
        """(rows of files added or rewritten, rows of files changed or removed) since last time."""
        listing = list_files(self.wh.table_dir(self.table))
        gone = {n: self.rows.pop(n, []) for n, st in list(self.states.items()) if listing.get(n) != st}
        for name in gone:
            self.states.pop(name, None)
        added = {}
        for name, state in listing.items():
            if name in self.states:
                continue
            path = self.wh.table_dir(self.table) / name
            try:
                table = read_columns(path, self.columns)
            except FileNotFoundError:  # removed between the listing and the read
                continue
            rows = list(zip(*_columns(table, self.columns), strict=True))
            self.states[name], self.rows[name] = state, rows
            added[name] = rows
        return added, gone


class Inventory:
    """Paths and contents the warehouse holds (see the module doc). Thread-safe."""

    def __init__(self, wh: Warehouse):
        self.wh = wh
        self._lock = threading.RLock()
        self._videos = _TableFiles(wh, "videos", VIDEO_COLUMNS)
        self._duplicates = _TableFiles(wh, "duplicates", DUPLICATE_COLUMNS)
        self._quarantine = _TableFiles(wh, "quarantine", QUARANTINE_COLUMNS)
        self.by_source: dict[str, dict[str, Held]] = defaultdict(dict)  # source_id -> key -> Held
        self.by_path: dict[str, dict[str, Held]] = defaultdict(dict)  # path -> source_id -> Held
        self.linked: dict[str, Linked] = {}
        self.bad: dict[str, Bad] = {}
        self.refresh()

    def refresh(self) -> list[Held]:
        """Catch up with files written or removed since the last look; returns what was added."""
        with self._lock:
            added, gone = self._videos.refresh()
            for name, rows in gone.items():
                for row in rows:
                    self._forget(self._held(name, row))
            new = []
            for name, rows in added.items():
                for row in rows:
                    held = self._held(name, row)
                    self.by_source[held.source_id][held.key] = held
                    self.by_path[held.path][held.source_id] = held
                    new.append(held)
            self._refresh_small()
            return new

    def _refresh_small(self) -> None:
        added, gone = self._duplicates.refresh()
        for rows in gone.values():
            for path, *_ in rows:
                self.linked.pop(path, None)
        for rows in added.values():
            for row in rows:
                self.linked[row[0]] = Linked(*row)
        added, gone = self._quarantine.refresh()
        for rows in gone.values():
            for row in rows:
                self.bad.pop(row[0], None)
        for rows in added.values():
            for row in rows:
                self.bad[row[0]] = Bad(*row)

    @staticmethod
    def _held(name: str, row: tuple) -> Held:
        source_id, path, config_hash, contract_version, size, mtime_ns = row
        return Held(source_id, name.removesuffix(".parquet"), path, cache_key(config_hash, contract_version),
                    size, mtime_ns)

    def _forget(self, held: Held) -> None:
        keys = self.by_source.get(held.source_id, {})
        if keys.get(held.key) == held:
            del keys[held.key]
            if not keys:
                del self.by_source[held.source_id]
        paths = self.by_path.get(held.path, {})
        if paths.get(held.source_id) == held:
            del paths[held.source_id]
            if not paths:
                del self.by_path[held.path]

    def loaded(self, source_id: str, key: str | None = None) -> Held | None:
        """Where this content is loaded (with settings `key`, when given), or None."""
        with self._lock:
            for held in self.by_source.get(source_id, {}).values():
                if key is None or held.cache_key == key:
                    return held
            return None

    def held_at(self, path: str) -> list[Held]:
        with self._lock:
            return list(self.by_path.get(path, {}).values())

    def keys_of(self, source_id: str) -> list[str]:
        with self._lock:
            return list(self.by_source.get(source_id, {}))


_cache: dict[str, Inventory] = {}
_cache_lock = threading.Lock()


def inventory(wh: Warehouse, fresh: bool = False) -> Inventory:
    """This process's inventory of `wh`, caught up with the files written since it was read
    (`fresh`: read anew, e.g. at the start of a run)."""
    where = f"{wh.home}|{wh.root}"
    with _cache_lock:
        if fresh or where not in _cache:
            _cache[where] = Inventory(wh)
            return _cache[where]
        found = _cache[where]
    found.refresh()
    return found
