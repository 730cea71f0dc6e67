"""DuckDB over the Parquet tree: view DDL, read connections, and the catalog file.

Readers never open the catalog file: `connect()` builds an in-memory DuckDB whose views point at
the Parquet files, so no writer's file lock can block a query; `frames` reads the latest
native-table snapshot (`warehouse.snapshot`, read-only) plus whatever Parquet changed since. The
catalog file
`warehouse.duckdb` holds the same views for people who open DuckDB directly
(`duckdb -readonly .affectflow/warehouse.duckdb`); flows only touch it to refresh the views.
"""

from __future__ import annotations

import functools
import re
import time
from pathlib import Path

import duckdb

from warehouse import snapshot
from warehouse.layout import SEED_FILE, Warehouse
from warehouse.storage import register

VIEWS_DIR = Path(__file__).with_name("views")
_VIEW_NAME = re.compile(r"CREATE\s+OR\s+REPLACE\s+VIEW\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
# Words with which a query reads the catalog rather than a table: it gets every view.
_CATALOG_WORDS = {"show", "describe", "information_schema", "tables", "views", "columns"}


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def table_view_sql(wh: Warehouse, skip: tuple[str, ...] = (), only: set[str] | None = None) -> list[str]:
    """One `CREATE VIEW` per contract table over its Parquet files (but the tables in `skip`, and
    only those in `only` when given).

    Columns are matched by name across files, so files written before a column was added to the
    contract read as null there (by default DuckDB takes the first file's columns). `frames`,
    whose files always carry every contract column, skips that: it reads no extra footers."""
    return [
        f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({_quote(wh.glob(name))}"
        f"{'' if name == 'frames' else ', union_by_name = true'})"
        for name in wh.tables if name not in skip and (only is None or name in only)
    ]


def _words(sql: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_$]*", sql)}


@functools.cache
def derived_views() -> dict[str, str]:
    """Analyst views declared in `warehouse/views/*.sql` (file-name order): name -> statement."""
    views: dict[str, str] = {}
    for path in sorted(VIEWS_DIR.glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        starts = [m.start() for m in _VIEW_NAME.finditer(text)] + [len(text)]
        for start, end in zip(starts, starts[1:], strict=False):
            match = _VIEW_NAME.match(text, start)
            assert match is not None
            views[match.group(1).lower()] = text[start:end]
    return views


def derived_view_sql() -> list[str]:
    """Analyst views declared in `warehouse/views/*.sql`, applied in file-name order."""
    return list(derived_views().values())


def views_for(wh: Warehouse, sql: str) -> set[str] | None:
    """The views `sql` can reach: every view whose name appears in it as a word (in identifiers,
    quoted names or strings alike, so nothing it names is missed), with what those views read;
    None (every view) when it asks the catalog itself (SHOW, DESCRIBE, information_schema,
    duckdb_*() functions). Binding a view over Parquet reads file footers, so a query that
    names two small tables should not pay for all of them."""
    words = _words(sql)
    if words & _CATALOG_WORDS or any(w.startswith(("duckdb_", "pragma_", "pg_", "sqlite_")) for w in words):
        return None
    derived = derived_views()
    wanted = words & (set(wh.tables) | set(derived))
    pending = [name for name in wanted if name in derived]
    while pending:
        for name in _words(derived[pending.pop()]) & (set(wh.tables) | set(derived)) - wanted:
            wanted.add(name)
            if name in derived:
                pending.append(name)
    return wanted


def create_views(con: duckdb.DuckDBPyConnection, wh: Warehouse, use_snapshot: bool = False,
                 only: set[str] | None = None) -> None:
    frames = only is None or snapshot.TABLE in only
    delta = snapshot.attach(con, wh) if use_snapshot and frames else None
    for sql in table_view_sql(wh, skip=(snapshot.TABLE,) if delta is not None else (), only=only):
        con.execute(sql)
    if delta is not None:
        con.execute(snapshot.frames_view_sql(con, delta))
    for name, sql in derived_views().items():
        if only is None or name in only:
            con.execute(sql)


def _seeds_current(con: duckdb.DuckDBPyConnection, wh: Warehouse, names: list[str]) -> bool:
    """Whether each named table's schema seed is in place with the contract's fingerprint, asked
    of DuckDB (one read of the files' key-value metadata); `Warehouse.init`, which reads them
    with pyarrow and rewrites stale ones, is needed only when one is not. A local tree only."""
    if not isinstance(wh.root, Path):
        return False
    seeds = {str(wh.table_dir(name) / SEED_FILE): wh.table(name).fingerprint() for name in names}
    if not seeds:
        return True
    try:
        found = dict(con.execute("SELECT file_name, decode(value) FROM parquet_kv_metadata(?) "
                                 "WHERE decode(key) = 'affectflow.fingerprint'", [list(seeds)]).fetchall())
    except duckdb.Error:  # a seed is missing or unreadable: init writes it
        return False
    return found == seeds


def connect(wh: Warehouse, threads: int | None = None, use_snapshot: bool = True,
            views: set[str] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the warehouse's views (every view, or those in `views` and
    nothing else); it holds no write lock on any file (the snapshot, when there is one, is
    attached read-only)."""
    con = duckdb.connect(":memory:")
    if not _seeds_current(con, wh, [n for n in wh.tables if views is None or n in views]):
        wh.init()
    register(con, wh.root)
    if threads:
        con.execute(f"SET threads={int(threads)}")
    create_views(con, wh, use_snapshot=use_snapshot, only=views)
    return con


def refresh_catalog(wh: Warehouse, attempts: int = 20, wait_s: float = 0.25, rebuild: bool = False) -> bool:
    """Publish a new `frames` snapshot (see `warehouse.snapshot`), then rewrite the views in the
    catalog file. Best effort: a reader that holds the file open
    (e.g. a DuckDB shell) blocks the write lock, in which case the views already there stay
    (they read the Parquet files, so they still see new data) and this returns False. On an
    object store the first snapshot on a machine is made only when `rebuild` asks for it."""
    wh.init()
    snapshot.publish(wh, start=rebuild or isinstance(wh.root, Path))
    last: Exception | None = None
    for _ in range(attempts):
        try:
            with duckdb.connect(str(wh.catalog_path)) as con:
                register(con, wh.root)
                create_views(con, wh)
            return True
        except duckdb.IOException as exc:  # the file is locked by another process
            last = exc
            time.sleep(wait_s)
    if last is not None and not wh.catalog_path.exists():
        raise last
    return False
