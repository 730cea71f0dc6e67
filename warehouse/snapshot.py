"""Native-table snapshots of `frames`: the fast path for queries, never a second source of truth.

Parquet views cost a footer parse and a scan setup per file on every query (4.3 s for a per-video
aggregate over 10M frames in 2,000 files, `benchmarks/bench_warehouse.py`); DuckDB's own tables
answer the same query in ~0.16 s. But a DuckDB file that a flow writes to is locked against every
other process. So each writing flow, when it ends, publishes a *new* DuckDB file that nobody will
ever write to again:

    <home>/snapshots/frames-000042.duckdb   native `frames` + `_files` (the Parquet files it holds)
    <home>/snapshots/current.duckdb         symlink to the newest one, replaced atomically

Publishing copies the current snapshot, deletes the rows of Parquet files that changed or went
away, inserts the new files, then renames: the cost follows what changed, not the warehouse size
(plus one file copy). The table holds only the columns some file fills (an extractor fills ~60 to
~470 of the contract's 800; the Parquet footers' null counts say which), so null columns cost no
load time; the reader's view supplies the others as typed NULLs. Readers (`warehouse.catalog.connect`) attach the snapshot read-only, which
any number of processes may do at once, and compare its `_files` with the Parquet tree: files
added or rewritten since are read from Parquet, files removed are hidden, so a query always sees
exactly what the Parquet views would show.

An object-store warehouse (`AFFECTFLOW_WAREHOUSE_URL`) gets the same snapshot, kept on each
machine under its own `<home>/snapshots`: started by `affectflow warehouse rebuild` (it reads
every frames object once; worker machines that never query need not), then kept up to date by
the flows that machine runs, and checked against one listing of the bucket per query (object
size, time and ETag), so objects other machines wrote since are read from the bucket.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from data_contracts import FRAMES
from warehouse.layout import Warehouse
from warehouse.storage import FileState, StoragePath, list_files, register

TABLE = FRAMES.name
LINK = "current.duckdb"
FORMAT = "3"  # bump when the snapshot layout changes: older snapshots are then rebuilt
# (3: rows carry `_file`, the key of the Parquet file they came from: a shard file holds many items)
FILE_COLUMN = "_file"
KEEP = 2  # snapshots kept: the current one and the one before it (a reader that resolved the link just
# before a publish still finds its file; one already attached keeps reading even after a prune)


@dataclass(frozen=True)
class Delta:
    """How the Parquet tree differs from a snapshot: files to read from Parquet, keys to hide."""

    snapshot: Path
    fresh: list[StoragePath]
    hidden: list[str]

    @property
    def empty(self) -> bool:
        return not self.fresh and not self.hidden


def snapshot_dir(wh: Warehouse) -> Path:
    return wh.home / "snapshots"


def current(wh: Warehouse) -> Path | None:
    """The newest published snapshot file, or None."""
    link = snapshot_dir(wh) / LINK
    try:
        target = Path(os.readlink(link))
    except OSError:
        return None
    path = target if target.is_absolute() else link.parent / target
    return path if path.exists() else None


def _frames_dir(wh: Warehouse) -> StoragePath:
    return wh.table_dir(TABLE)


def _listing(wh: Warehouse) -> dict[str, FileState]:
    return list_files(_frames_dir(wh))


def _recorded(con: duckdb.DuckDBPyConnection, schema: str) -> dict[str, FileState]:
    rows = con.execute(f"SELECT name, size, mtime_ns, tag FROM {schema}._files").fetchall()
    return {name: FileState(size, mtime, tag) for name, size, mtime, tag in rows}


def _diff(recorded: dict[str, FileState], listing: dict[str, FileState]) -> tuple[list[str], list[str]]:
    """(names to read from Parquet, names whose snapshot rows are stale)."""
    fresh = sorted(n for n, state in listing.items() if recorded.get(n) != state)
    stale = sorted(n for n, state in recorded.items() if listing.get(n) != state)
    return fresh, stale


def _key(name: str) -> str:
    return name.removesuffix(".parquet")


def _version() -> str:
    return f"{FRAMES.fingerprint()}/{FORMAT}"


def _fingerprint(con: duckdb.DuckDBPyConnection, schema: str) -> str | None:
    row = con.execute(f"SELECT value FROM {schema}._meta WHERE key = 'fingerprint'").fetchone()
    return row[0] if row else None


def attach(con: duckdb.DuckDBPyConnection, wh: Warehouse, alias: str = "snap") -> Delta | None:
    """Attach the current snapshot read-only as `alias` and return how the Parquet tree differs
    from it; None when there is no usable snapshot (the caller then uses the views)."""
    for _ in range(2):  # a publisher may remove an old file between readlink and attach: look again
        path = current(wh)
        if path is None:
            return None
        try:
            con.execute(f"ATTACH {_quote(str(path))} AS {alias} (READ_ONLY)")
            break
        except duckdb.Error:
            continue
    else:
        return None
    try:
        usable = _fingerprint(con, alias) == _version()  # else the contract changed since: views only
        recorded = _recorded(con, alias) if usable else {}
    except duckdb.Error:  # not a snapshot this version can read: the views answer instead
        usable = False
    if not usable:
        con.execute(f"DETACH {alias}")
        return None
    fresh, stale = _diff(recorded, _listing(wh))
    directory = _frames_dir(wh)
    return Delta(path, [directory / n for n in fresh], [_key(n) for n in stale])


def _stored(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM pragma_table_info(?)", [table]).fetchall()}


def frames_view_sql(con: duckdb.DuckDBPyConnection, delta: Delta, alias: str = "snap") -> str:
    """`frames` = the snapshot's rows minus stale files, plus the files newer than the snapshot,
    in the contract's column order (columns the snapshot does not store are typed NULLs)."""
    stored = _stored(con, f"{alias}.{TABLE}")
    select = ", ".join(f'"{c.name}"' if c.name in stored else f'CAST(NULL AS {c.duckdb_type}) AS "{c.name}"'
                       for c in FRAMES.columns)
    sql = f"SELECT {select} FROM {alias}.{TABLE}"
    if delta.hidden:
        keys = ", ".join(_quote(k) for k in delta.hidden)
        sql += f" WHERE {FILE_COLUMN} NOT IN ({keys})"
    if delta.fresh:
        columns = ", ".join(f'"{n}"' for n in FRAMES.names)
        files = ", ".join(_quote(str(p)) for p in delta.fresh)
        sql += f" UNION ALL SELECT {columns} FROM read_parquet([{files}])"
    return f"CREATE OR REPLACE VIEW {TABLE} AS {sql}"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _create(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE TABLE _files (name VARCHAR PRIMARY KEY, size BIGINT, mtime_ns BIGINT, tag VARCHAR)")
    con.execute("CREATE TABLE _meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO _meta VALUES ('fingerprint', ?)", [_version()])


def _hold_columns(con: duckdb.DuckDBPyConnection, filled: list[str], new: bool) -> None:
    """A new snapshot's table is created with the key columns and these at once (an ALTER TABLE
    per column costs more with every column: 0.6 s for OpenFace's 700); an older one gets the
    ones it lacks."""
    if new:
        names = set(filled)
        kept = [c for c in FRAMES.columns if not c.nullable or c.name in names]
        columns = [f'"{c.name}" {c.duckdb_type}' for c in kept] + [f"{FILE_COLUMN} VARCHAR NOT NULL"]
        con.execute(f"CREATE TABLE {TABLE} ({', '.join(columns)})")
        return
    stored = _stored(con, TABLE)
    for name in filled:
        if name not in stored:
            con.execute(f'ALTER TABLE {TABLE} ADD COLUMN "{name}" {FRAMES.by_name[name].duckdb_type}')


def _next_name(directory: Path) -> str:
    numbers = [int(p.stem.split("-")[1]) for p in directory.glob("frames-*.duckdb") if p.stem.split("-")[1].isdigit()]
    return f"frames-{max(numbers, default=0) + 1:06d}.duckdb"


@dataclass(frozen=True)
class Published:
    path: Path | None
    inserted_files: int
    removed_files: int


def publish(wh: Warehouse, start: bool = True) -> Published:
    """Bring the snapshot up to date with the Parquet tree (see the module doc). A publisher
    already at work makes this a no-op (its snapshot may miss our files; readers add them from
    Parquet, and the next publish folds them in). `start=False` only updates a snapshot this
    machine already has (a worker writing to a bucket should not download it all)."""
    if not start and current(wh) is None:
        return Published(None, 0, 0)
    directory = snapshot_dir(wh)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return Published(current(wh), 0, 0)
        return _publish_locked(wh, directory)


def _publish_locked(wh: Warehouse, directory: Path) -> Published:
    for abandoned in directory.glob(".building-*"):  # a publisher killed mid-way (we hold the lock)
        abandoned.unlink(missing_ok=True)
    base = current(wh)
    listing = _listing(wh)
    if base is not None:  # decide before copying: most runs of train/predict/resplit change no frames
        try:
            with duckdb.connect(str(base), read_only=True) as con:
                if _fingerprint(con, "main") != _version():
                    base = None  # another contract or snapshot format: start afresh
                elif _diff(_recorded(con, "main"), listing) == ([], []):
                    return Published(base, 0, 0)
        except duckdb.Error:  # unreadable: start afresh
            base = None
    tmp = directory / f".building-{uuid.uuid4().hex}.duckdb"
    try:
        if base is not None:
            shutil.copyfile(base, tmp)
        con = duckdb.connect(str(tmp))
        try:
            register(con, wh.root)
            if base is None:
                _create(con)
            fresh, stale = _diff(_recorded(con, "main"), listing)
            _apply(con, wh, listing, fresh, stale, new=base is None)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        final = directory / _next_name(directory)
        os.replace(tmp, final)
        _point_at(directory, final)
        _prune(directory, final)
        return Published(final, len(fresh), len(stale))
    finally:
        tmp.unlink(missing_ok=True)


def _filled(con: duckdb.DuckDBPyConnection, paths: list[str]) -> list[str]:
    """The contract columns that hold a value in at least one row of these files (from the
    footers' null counts; a column without statistics counts as filled)."""
    rows = con.execute("SELECT path_in_schema FROM parquet_metadata(?) GROUP BY path_in_schema "
                       "HAVING bool_or(stats_null_count IS NULL OR stats_null_count < num_values)", [paths]).fetchall()
    found = {r[0] for r in rows}
    return [c.name for c in FRAMES.columns if c.name in found or not c.nullable]


def _apply(con: duckdb.DuckDBPyConnection, wh: Warehouse, listing: dict[str, FileState],
           fresh: list[str], stale: list[str], new: bool) -> None:
    con.execute("BEGIN")
    paths = [str(_frames_dir(wh) / n) for n in fresh]
    filled = _filled(con, paths) if fresh else []
    _hold_columns(con, filled, new)
    if stale:
        con.execute(f"DELETE FROM {TABLE} WHERE {FILE_COLUMN} IN (SELECT unnest(?))", [[_key(n) for n in stale]])
        con.execute("DELETE FROM _files WHERE name IN (SELECT unnest(?))", [stale])
    if fresh:
        columns = ", ".join(f'"{n}"' for n in filled)
        con.execute(f"INSERT INTO {TABLE} ({columns}, {FILE_COLUMN}) SELECT {columns}, "
                    "parse_filename(filename, true) FROM read_parquet(?, filename = true)", [paths])
        con.executemany("INSERT INTO _files VALUES (?, ?, ?, ?)",
                        [(n, listing[n].size, listing[n].mtime_ns, listing[n].tag) for n in fresh])
    con.execute("COMMIT")


def _point_at(directory: Path, final: Path) -> None:
    tmp_link = directory / f".link-{uuid.uuid4().hex}"
    os.symlink(final.name, tmp_link)
    os.replace(tmp_link, directory / LINK)


def _prune(directory: Path, final: Path) -> None:
    snapshots = sorted(directory.glob("frames-*.duckdb"))
    for old in snapshots[:-KEEP]:
        if old != final:
            old.unlink(missing_ok=True)
    for wal in directory.glob("frames-*.duckdb.wal"):
        wal.unlink(missing_ok=True)
