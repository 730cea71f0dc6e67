"""`affectflow warehouse info|rebuild`: inspect the warehouse, or rebuild its DuckDB catalog."""

from __future__ import annotations

import argparse
from pathlib import Path

from affectflow.commands._common import fail


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "warehouse", help="show where the warehouse is and what it holds; rebuild its catalog",
        description="`info` lists each table with its row count and files; `rebuild` rewrites the "
        "DuckDB catalog file (views over the Parquet files) from the contract and brings the "
        "native-table `frames` snapshot up to date — any machine can rebuild both from the Parquet alone.")
    p.add_argument("action", choices=("info", "rebuild"))
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from affectflow.settings import load_settings
    from warehouse import Warehouse, snapshot
    from warehouse.catalog import connect, refresh_catalog

    wh = Warehouse(load_settings().home).init()
    if args.action == "rebuild":
        if not refresh_catalog(wh, rebuild=True):
            return fail(f"{wh.catalog_path} is open in another process; close it and retry", 1)
        print(f"rebuilt {wh.catalog_path} ({len(wh.tables)} table views)")
        snap = snapshot.current(wh)
        if snap is not None:
            print(f"frames snapshot {snap}")
        return 0
    con = connect(wh)
    snap = snapshot.current(wh)
    missing = ("none yet (written when a flow ends)" if isinstance(wh.root, Path)
               else "none on this machine (`affectflow warehouse rebuild` makes one; queries use the views)")
    snap_text = f"{snap} ({snap.stat().st_size / 2**20:,.1f} MB)" if snap else missing
    print(f"AFFECTFLOW_HOME  {wh.home}\ncatalog          {wh.catalog_path}\nparquet          {wh.root}\n"
          f"frames snapshot  {snap_text}\n")
    print(f"{'table':<16}{'rows':>12}{'files':>8}")
    for name in wh.tables:
        rows = con.execute(f"select count(*) from {name}").fetchone()[0]
        print(f"{name:<16}{rows:>12}{len(wh.files(name)):>8}")
    return 0
