"""DuckDB over the Parquet tree: view DDL, read connections, and the catalog file.

Readers never open the catalog file: `connect()` builds an in-memory DuckDB whose views point at
the Parquet files, so no writer's file lock can block a query; `frames` reads the latest
native-table snapshot (`warehouse.snapshot`, read-only) plus whatever Parquet changed since. The
catalog file
`warehouse.duckdb` holds the same views for people who open DuckDB directly
(`duckdb -readonly .affectflow/warehouse.duckdb`); flows only touch it to refresh the views.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from warehouse import snapshot
from warehouse.layout import Warehouse
from warehouse.storage import register

VIEWS_DIR = Path(__file__).with_name("views")


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def table_view_sql(wh: Warehouse, skip: tuple[str, ...] = ()) -> list[str]:
    """One `CREATE VIEW` per contract table over its Parquet files (but the tables in `skip`).

    Columns are matched by name across files, so files written before a column was added to the
    contract read as null there (by default DuckDB takes the first file's columns). `frames`,
    whose files always carry every contract column, skips that: it reads no extra footers."""
    return [
        f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({_quote(wh.glob(name))}"
        f"{'' if name == 'frames' else ', union_by_name = true'})"
        for name in wh.tables if name not in skip
    ]


def derived_view_sql() -> list[str]:
    """Analyst views declared in `warehouse/views/*.sql`, applied in file-name order."""
    return [p.read_text(encoding="utf-8") for p in sorted(VIEWS_DIR.glob("*.sql"))]


def create_views(con: duckdb.DuckDBPyConnection, wh: Warehouse, use_snapshot: bool = False) -> None:
    delta = snapshot.attach(con, wh) if use_snapshot else None
    for sql in table_view_sql(wh, skip=(snapshot.TABLE,) if delta is not None else ()):
        con.execute(sql)
    if delta is not None:
        con.execute(snapshot.frames_view_sql(con, delta))
    for sql in derived_view_sql():
        con.execute(sql)


def connect(wh: Warehouse, threads: int | None = None, use_snapshot: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with every warehouse view; it holds no write lock on any file
    (the snapshot, when there is one, is attached read-only)."""
    wh.init()
    con = duckdb.connect(":memory:")
    register(con, wh.root)
    if threads:
        con.execute(f"SET threads={int(threads)}")
    create_views(con, wh, use_snapshot=use_snapshot)
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
