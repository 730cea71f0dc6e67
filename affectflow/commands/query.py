"""`affectflow query "SQL"`: read-only SQL over the warehouse."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import BinaryIO

from affectflow.commands._common import FAILURE, fail, format_rows

FORMATS = ("table", "csv", "json", "parquet")
MAX_TABLE_ROWS = 200


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "query", help="run read-only SQL against the warehouse",
        description="Run SQL (SELECT/WITH/DESCRIBE/SHOW/EXPLAIN) against the warehouse views: "
        "frames, videos, labels, quarantine, runs, and the derived views. Never takes a lock, so it "
        "works while flows are writing.",
        epilog='example: affectflow query "select video_id, count(*) frames, avg(success) face_rate '
        'from frames group by 1"')
    p.add_argument("sql", help="the SQL text, or - to read it from standard input")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table: the first 200 rows aligned; csv, json (an array of row objects) and parquet "
                   "stream every row, so memory stays flat whatever the result's size")
    p.add_argument("--output", "-o", help="write to this file instead of standard output")
    p.add_argument("--timeout", type=float, default=None, help="seconds before the query is stopped "
                   "(default $AFFECTFLOW_QUERY_TIMEOUT or 300)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from affectflow.settings import load_settings
    from warehouse import Warehouse
    from warehouse.query import QueryError, open_query, query_head
    from warehouse.storage import StorageError

    if args.format == "parquet" and not args.output:
        return fail("--format parquet needs --output FILE")
    sql = sys.stdin.read() if args.sql == "-" else args.sql
    settings = load_settings()
    timeout = args.timeout if args.timeout is not None else settings.query_timeout_s
    if timeout <= 0:
        return fail("--timeout must be positive")
    wh = Warehouse(settings.home)
    try:
        if args.format == "table":  # the first rows only, as tuples: a small result needs no Arrow
            with query_head(wh, sql, MAX_TABLE_ROWS, timeout) as head, _output(args) as out:
                out.write((format_rows(head.names, head.rows, head.total) + "\n").encode())
        else:
            with open_query(wh, sql, timeout) as result, _output(args) as out:
                WRITERS[args.format](result, out)
    except QueryError as exc:
        return fail(str(exc), FAILURE)
    except (_OutputError, StorageError) as exc:
        return fail(str(exc), FAILURE)
    return 0


class _OutputError(Exception):
    """The output file cannot be opened or written."""


@contextlib.contextmanager
def _output(args: argparse.Namespace) -> Iterator[BinaryIO]:
    """The binary stream the result goes to: --output FILE, else standard output."""
    if not args.output:
        sys.stdout.flush()  # whatever was printed before goes first
        out = getattr(sys.stdout, "buffer", None) or _TextSink(sys.stdout)
        yield out
        out.flush()
        return
    try:
        fh = open(args.output, "wb")  # noqa: SIM115 - closed below, errors reported as one line
    except OSError as exc:
        raise _OutputError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    with fh:
        try:
            yield fh
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            raise _OutputError(f"cannot write {args.output}: {exc.strerror or exc}") from None


class _TextSink:
    """A binary writer over a text stream that has no `buffer` (e.g. a StringIO in tests)."""

    def __init__(self, stream):
        self.stream = stream
        self.closed = False

    def write(self, data: bytes) -> int:
        self.stream.write(bytes(data).decode())
        return len(data)

    def flush(self) -> None:
        self.stream.flush()


def _csv(result, out: BinaryIO) -> None:
    import pyarrow.csv as pcsv

    with pcsv.CSVWriter(out, result.schema, write_options=pcsv.WriteOptions(quoting_style="needed")) as writer:
        for batch in result:
            writer.write_batch(batch)


def _json(result, out: BinaryIO) -> None:
    """A JSON array of row objects, one row per line, written batch by batch."""
    encode = json.JSONEncoder(default=str).encode
    out.write(b"[")
    first = True
    for batch in result:
        for row in batch.to_pylist():
            out.write((b"\n" if first else b",\n") + encode(row).encode())
            first = False
    out.write(b"\n]\n" if not first else b"]\n")


def _parquet(result, out: BinaryIO) -> None:
    import pyarrow.parquet as pq

    with pq.ParquetWriter(out, result.schema) as writer:
        for batch in result:
            writer.write_batch(batch)


WRITERS = {"csv": _csv, "json": _json, "parquet": _parquet}
