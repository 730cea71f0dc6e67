"""`affectflow report [--out report.html]`: one self-contained HTML page about the warehouse."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="write an HTML report about the warehouse",
        description="Write one self-contained HTML page (no network needed to view it): items and "
        "frames per label, face-detection rate per video, feature distributions, quarantined items, "
        "split versions, training runs against their baselines, and prediction plots.")
    p.add_argument("--out", default="report.html", help="the HTML file to write (default: report.html)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from affectflow.commands._common import fail
    from affectflow.settings import load_settings
    from tasks.report import write_report

    try:
        path = write_report(load_settings().home, args.out)
    except OSError as exc:
        return fail(f"cannot write the report to {args.out}: {exc.strerror or exc}")
    print(f"report written to {path}")
    return 0
