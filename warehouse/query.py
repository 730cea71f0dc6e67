"""Read-only SQL over the warehouse, for `affectflow query` and the flows' summaries.

What a query can do: SELECT (with WITH, DESCRIBE, SHOW, SUMMARIZE, FROM …) and EXPLAIN of one of
those. EXPLAIN ANALYZE is refused: it runs the statement it explains, so `EXPLAIN ANALYZE COPY …`
would write. What a query can reach: the Parquet tree (read), and a private spill folder under
`<home>/tmp` that DuckDB creates only when a query needs more memory than it has and removes
when the query ends; no statement that could write there passes `check_read_only`. The settings
a query can read back (`current_setting`, `duckdb_settings()`) name no path outside the home.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import duckdb

if TYPE_CHECKING:
    import pyarrow as pa

from warehouse.catalog import connect, views_for
from warehouse.layout import Warehouse

_R = TypeVar("_R", bound="_Running")
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
    con.execute("SET enable_progress_bar=false")  # DuckDB's own bar would land in the output
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")


class _Running(ABC):
    """A query's last statement running in a worker thread that hands its output over a small
    queue, so memory stays one or two chunks whatever the result's size, and the time limit and
    Ctrl-C (on the caller's thread) can stop it at any point."""

    def __init__(self, con: duckdb.DuckDBPyConnection, statements: list[str], timeout_s: float | None):
        self._con, self._statements, self._timeout_s = con, statements, timeout_s
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._closed = threading.Event()
        self._worker = threading.Thread(target=self._run, name="affectflow-query", daemon=True)
        self._worker.start()

    @abstractmethod
    def _produce(self) -> None:
        """Run the last statement and `_put` its output (each subclass: batches, or a table's head)."""

    def _put(self, kind: str, value: object = None) -> bool:
        """Hand `value` to the reader; False once the reader has gone (the worker then stops)."""
        while not self._closed.is_set():
            try:
                self._queue.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for st in self._statements[:-1]:
                self._con.execute(st)
            self._produce()
        except Exception as exc:  # reported to the reader by _get
            self._put("error", exc)

    def _get(self) -> tuple[str, object]:
        while True:
            remaining = None if self._deadline is None else self._deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self.close()
                raise QueryError(f"query stopped after the {self._timeout_s:g} s time limit (--timeout)")
            try:
                kind, value = self._queue.get(timeout=0.1 if remaining is None else min(0.1, remaining))
            except queue.Empty:
                continue
            if kind == "error":
                assert isinstance(value, Exception)
                raise QueryError(f"SQL error: {_first_line(value)}")
            return kind, value

    def close(self) -> None:
        """Stop the query if it still runs and let the worker go (idempotent)."""
        if not self._closed.is_set():
            self._closed.set()
            self._con.interrupt()
            self._worker.join(5)


class Batches(_Running):
    """The whole result as Arrow record batches of at most `batch_rows` rows, read while the
    caller iterates (csv, json and parquet output; `run_query`)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, statements: list[str], timeout_s: float | None,
                 batch_rows: int = 65_536):
        self._batch_rows = batch_rows
        super().__init__(con, statements, timeout_s)
        self.schema: pa.Schema = self._get()[1]  # type: ignore[assignment]

    def _produce(self) -> None:
        reader = self._con.sql(self._statements[-1]).to_arrow_reader(self._batch_rows)
        if self._put("schema", reader.schema):
            for batch in reader:
                if not self._put("batch", batch):
                    return
            self._put("end")

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while True:
            kind, value = self._get()
            if kind == "end":
                return
            yield value  # type: ignore[misc]


class Head(_Running):
    """The first `rows` rows as Python tuples, the column names, and how many rows the result has
    in all (table output). The rest is only counted, so a small result needs no Arrow at all."""

    def __init__(self, con: duckdb.DuckDBPyConnection, statements: list[str], timeout_s: float | None, rows: int):
        self._rows = rows
        super().__init__(con, statements, timeout_s)
        self.names, self.rows = self._get()[1]  # type: ignore[misc]
        self.total: int = self._get()[1]  # type: ignore[assignment]

    def _produce(self) -> None:
        cursor = self._con.execute(self._statements[-1])
        names = [d[0] for d in cursor.description or []]
        rows = cursor.fetchmany(self._rows)
        if not self._put("head", (names, rows)):
            return
        more = 0 if len(rows) < self._rows or cursor.fetchone() is None else 1
        if more:  # counted batch by batch in Arrow: millions of rows as tuples would take seconds
            with warnings.catch_warnings():  # DuckDB warns that Arrow on this cursor copies the rows:
                warnings.simplefilter("ignore", UserWarning)  # that is what counting them costs
                more += sum(batch.num_rows for batch in cursor.to_arrow_reader(65_536) or ())
        self._put("total", len(rows) + more)


@contextmanager
def _query(wh: Warehouse, sql: str, start: Callable[[duckdb.DuckDBPyConnection, list[str]], _R]) -> Iterator[_R]:
    """Check `sql`, lock the connection down, and start it (`start`). Only the views the SQL
    names are built (`views_for`): binding a view over Parquet reads file footers."""
    con = connect(wh, views=views_for(wh, sql))
    scratch = _scratch_dir(wh)
    running = None
    try:
        statements = check_read_only(con, sql)
        _lock_down(con, wh, scratch)
        running = start(con, statements)
        yield running
    finally:
        if running is not None:
            running.close()
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)


def open_query(wh: Warehouse, sql: str, timeout_s: float | None = None,
               batch_rows: int = 65_536) -> AbstractContextManager[Batches]:
    """Run read-only SQL; iterate the result for its Arrow record batches."""
    return _query(wh, sql, lambda con, statements: Batches(con, statements, timeout_s, batch_rows))


def query_head(wh: Warehouse, sql: str, rows: int, timeout_s: float | None = None) -> AbstractContextManager[Head]:
    """Run read-only SQL for its first `rows` rows (as tuples) and its row count."""
    return _query(wh, sql, lambda con, statements: Head(con, statements, timeout_s, rows))


def run_query(wh: Warehouse, sql: str, timeout_s: float | None = None) -> pa.Table:
    """Run read-only SQL; the last statement's result comes back as one Arrow table."""
    import pyarrow as pa

    with open_query(wh, sql, timeout_s) as result:
        return pa.Table.from_batches(list(result), schema=result.schema)
