"""`affectflow splits`: partition x class counts of a split version, and the SQL behind them."""

from __future__ import annotations

import argparse
import json

from affectflow.commands._common import fail

LIST_SQL = ("SELECT split_id, created_at, status, strategy, mode, group_by, seed, units, rows, message "
            "FROM split_runs ORDER BY created_at DESC, split_id DESC")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "splits", help="show a split version's partition x class counts",
        description="Show the partition x class counts of the current split (the newest published "
        "version) or of --split-id, with the SQL that produced them; --list shows every version.")
    p.add_argument("--split-id", help="a version from `affectflow splits --list` (default: current)")
    p.add_argument("--list", action="store_true", help="list every split version, newest first")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from affectflow.settings import load_settings
    from warehouse.catalog import connect
    from warehouse.layout import Warehouse

    con = connect(Warehouse(load_settings().home))
    try:
        if args.list:
            return _list(con, args.json)
        return _show(con, args.split_id, args.json)
    finally:
        con.close()


def _list(con, as_json: bool) -> int:
    frame = con.execute(LIST_SQL).df()
    if as_json:
        print(frame.to_json(orient="records", date_format="iso", indent=2))
    else:
        print(frame.to_string(index=False) if len(frame) else "no split versions yet; run `affectflow resplit`")
    return 0


def _show(con, split_id: str | None, as_json: bool) -> int:
    from tasks.publish_split import SUMMARY_SQL, counts_table, split_record, summary

    record = split_record(con, split_id)
    if record is None and split_id:  # a name that names nothing: a mistake in the command (2)
        return fail(f"no split version {split_id!r}; see `affectflow splits --list`")
    if record is None:  # a right command on a warehouse without one yet (1)
        return fail("no published split yet; run `affectflow resplit`", code=1)
    params = json.loads(record["params"])
    table = counts_table(summary(con, record["split_id"]), tuple(params.get("class_order", ())))
    sql = SUMMARY_SQL.replace("$split_id", f"'{record['split_id']}'")
    if as_json:
        print(json.dumps({"split_id": record["split_id"], "status": record["status"],
                          "counts": table.to_dict(orient="index"), "sql": sql}, indent=2, default=str))
        return 0
    print(f"split {record['split_id']} ({record['status']}; {record['strategy']}, group by "
          f"{record['group_by']}, seed {record['seed']}, created {record['created_at']})")
    if record["status"] != "published":
        print(f"rejected: {record['message']}")
    print(table.to_string() if not table.empty else "(no rows)")
    print(f"\n-- counts from:\n{sql};")
    return 0
