"""Read-only SQL over the warehouse, for `affectflow query` and the flows' summaries."""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa

from warehouse.catalog import connect
from warehouse.layout import Warehouse

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class QueryError(Exception):
    """A query that cannot run: bad SQL, a write attempt, or a time-out. The message is for users."""


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    """Split `sql` into statements and refuse anything but SELECT / EXPLAIN."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL error: {_first_line(exc)}") from None
    if not statements:
        raise QueryError("empty query: give one SELECT statement")
    for st in statements:
        if st.type not in ALLOWED:
            kind = str(st.type).split(".")[-1]
            raise QueryError(
                f"refused: {kind} statements are not allowed; `affectflow query` is read-only "
                "(only SELECT, WITH … SELECT, DESCRIBE, SHOW and EXPLAIN)"
            )
    return [st.query for st in statements]


def _lock_down(con: duckdb.DuckDBPyConnection, wh: Warehouse) -> None:
    """No file access beyond the Parquet tree, and no way to undo that from SQL."""
    con.execute("SET allowed_directories=[?]", [str(wh.root) + "/"])
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")


def run_query(wh: Warehouse, sql: str, timeout_s: float | None = None) -> pa.Table:
    """Run read-only SQL; the last statement's result comes back as Arrow."""
    con = connect(wh)
    try:
        statements = check_read_only(con, sql)
        _lock_down(con, wh)
        result: dict[str, object] = {}

        def work() -> None:
            try:
                for st in statements[:-1]:
                    con.execute(st)
                result["table"] = con.sql(statements[-1]).to_arrow_table()
            except Exception as exc:  # reported to the caller below
                result["error"] = exc

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            con.interrupt()
            worker.join(5)
            raise QueryError(f"query stopped after the {timeout_s:g} s time limit (--timeout)")
        if "error" in result:
            exc = result["error"]
            assert isinstance(exc, Exception)
            raise QueryError(f"SQL error: {_first_line(exc)}")
        table = result["table"]
        assert isinstance(table, pa.Table)
        return table
    finally:
        con.close()
