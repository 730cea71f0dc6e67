"""Read-only SQL over the warehouse, for `affectflow query` and the flows' summaries.

What a query can do: SELECT (with WITH, DESCRIBE, SHOW, SUMMARIZE, FROM …) and EXPLAIN of one of
those. EXPLAIN ANALYZE is refused: it runs the statement it explains, so `EXPLAIN ANALYZE COPY …`
would write. What a query can reach: the Parquet tree (read), and a private spill folder under
`<home>/tmp` that DuckDB creates only when a query needs more memory than it has and removes
when the query ends; no statement that could write there passes `check_read_only`. The settings
a query can read back (`current_setting`, `duckdb_settings()`) name no path outside the home.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa

from warehouse.catalog import connect
from warehouse.layout import Warehouse

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
ANALYZE = {"analyze", "analyse"}


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
            _refuse(str(st.type).split(".")[-1])
        if st.type == duckdb.StatementType.EXPLAIN:
            _check_explain(con, st.query)
    return [st.query for st in statements]


def _refuse(kind: str) -> None:
    raise QueryError(
        f"refused: {kind} statements are not allowed; `affectflow query` is read-only "
        "(only SELECT, WITH … SELECT, DESCRIBE, SHOW and EXPLAIN without ANALYZE)"
    )


def _tokens(sql: str) -> list[tuple[int, str]]:
    """(offset, lower-case text) of each token of `sql`, comments left out (DuckDB's tokenizer)."""
    spans = duckdb.tokenize(sql)
    ends = [start for start, _ in spans[1:]] + [len(sql)]
    return [(start, sql[start:end].strip().lower())
            for (start, kind), end in zip(spans, ends, strict=True) if kind != duckdb.token_type.comment]


def _check_explain(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """EXPLAIN [(options)] of one SELECT, without ANALYZE: ANALYZE runs what it explains."""
    tokens = _tokens(sql)
    if not tokens or tokens[0][1] != "explain":
        _refuse("EXPLAIN")
    options, start = _explain_options(tokens)
    if options & ANALYZE:
        raise QueryError("refused: EXPLAIN ANALYZE runs the statement it explains; "
                         "use EXPLAIN without ANALYZE")
    explained = con.extract_statements(sql[tokens[start][0]:]) if start < len(tokens) else []
    if len(explained) != 1 or explained[0].type != duckdb.StatementType.SELECT:
        _refuse(f"EXPLAIN of {str(explained[0].type).split('.')[-1] if explained else 'nothing'}")


def _explain_options(tokens: list[tuple[int, str]]) -> tuple[set[str], int]:
    """The words of an EXPLAIN's options (`EXPLAIN ANALYZE …`, `EXPLAIN (FORMAT json, ANALYZE) …`)
    and the index of the explained statement's first token."""
    if len(tokens) < 2:
        return set(), len(tokens)
    if tokens[1][1] != "(":
        return {tokens[1][1]}, 1
    depth = 0
    for end, (_, text) in enumerate(tokens[1:], start=1):
        depth += {"(": 1, ")": -1}.get(text, 0)
        if depth == 0:
            return {word for _, word in tokens[2:end]}, end + 1
    return {word for _, word in tokens[2:]}, len(tokens)


def _scratch_dir(wh: Warehouse) -> Path:
    """A private spill folder for one query, under `<home>/tmp` (outside the Parquet tree).
    DuckDB creates it only if the query spills, and deletes it when the connection closes."""
    parent = wh.home / "tmp"
    parent.mkdir(parents=True, exist_ok=True)
    return parent / f"query-{uuid.uuid4().hex[:12]}"


def _lock_down(con: duckdb.DuckDBPyConnection, wh: Warehouse, scratch: Path) -> None:
    """No file access beyond the Parquet tree (and the spill folder), no setting that names a
    folder outside the home (DuckDB's defaults: `.tmp` in the working directory, `~/.duckdb/…`),
    and no way to undo that from SQL."""
    con.execute("SET temp_directory=?", [str(scratch)])
    con.execute("SET secret_directory=?", [str(scratch / "secrets")])
    con.execute("SET extension_directory=?", [str(scratch / "extensions")])
    con.execute("SET allowed_directories=[?]", [str(wh.root) + "/"])
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")


def run_query(wh: Warehouse, sql: str, timeout_s: float | None = None) -> pa.Table:
    """Run read-only SQL; the last statement's result comes back as Arrow."""
    con = connect(wh)
    scratch = _scratch_dir(wh)
    try:
        statements = check_read_only(con, sql)
        _lock_down(con, wh, scratch)
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
        shutil.rmtree(scratch, ignore_errors=True)
