"""`affectflow query "SQL"`: read-only SQL over the warehouse."""

from __future__ import annotations

import argparse
import json
import sys

from affectflow.commands._common import fail, format_table

FORMATS = ("table", "csv", "json", "parquet")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "query", help="run read-only SQL against the warehouse",
        description="Run SQL (SELECT/WITH/DESCRIBE/SHOW/EXPLAIN) against the warehouse views: "
        "frames, videos, labels, quarantine, runs, and the derived views. Never takes a lock, so it "
        "works while flows are writing.",
        epilog='example: affectflow query "select video_id, count(*) frames, avg(success) face_rate '
        'from frames group by 1"')
    p.add_argument("sql", help="the SQL text, or - to read it from standard input")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--output", "-o", help="write to this file instead of standard output")
    p.add_argument("--timeout", type=float, default=None, help="seconds before the query is stopped "
                   "(default $AFFECTFLOW_QUERY_TIMEOUT or 300)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from affectflow.settings import load_settings
    from warehouse import Warehouse
    from warehouse.query import QueryError, run_query

    if args.format == "parquet" and not args.output:
        return fail("--format parquet needs --output FILE")
    sql = sys.stdin.read() if args.sql == "-" else args.sql
    settings = load_settings()
    timeout = args.timeout if args.timeout is not None else settings.query_timeout_s
    if timeout <= 0:
        return fail("--timeout must be positive")
    try:
        table = run_query(Warehouse(settings.home), sql, timeout)
    except QueryError as exc:
        return fail(str(exc), 1)
    return _write(table, args)


def _write(table, args: argparse.Namespace) -> int:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        if args.format == "parquet":
            pq.write_table(table, args.output)
            return 0
        if args.format == "csv":
            if args.output:
                pcsv.write_csv(table, args.output)
            else:
                sys.stdout.write(table.to_pandas().to_csv(index=False))
            return 0
        text = (json.dumps(table.to_pylist(), default=str, indent=1) if args.format == "json"
                else format_table(table))
        if args.output:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        else:
            print(text)
    except OSError as exc:
        return fail(f"cannot write {args.output}: {exc.strerror or exc}")
    return 0
