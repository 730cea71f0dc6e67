"""`affectflow runs [RUN_ID]`: training runs and their test metrics, from the warehouse."""

from __future__ import annotations

import argparse

from affectflow.commands._common import fail, format_table

LIST_SQL = """SELECT run_id, split_id, status, started_at, encoder, loss_weighting, stages, epochs_run,
    round(emotion_accuracy, 4) AS emo_acc, round(emotion_macro_f1, 4) AS emo_f1,
    round(majority_accuracy, 4) AS majority_acc, round(logreg_accuracy, 4) AS logreg_acc,
    round(stress_f1, 4) AS stress_f1, round(valence_ccc, 4) AS val_ccc, round(arousal_ccc, 4) AS aro_ccc
FROM run_summary LIMIT ?"""

METRICS_SQL = """SELECT task, metric,
    round(max(value) FILTER (WHERE model = 'model'), 4) AS model,
    round(max(value) FILTER (WHERE model = 'majority'), 4) AS majority,
    round(max(value) FILTER (WHERE model = 'logreg'), 4) AS logreg,
    max(n) AS n
FROM metrics WHERE run_id = ? GROUP BY task, metric ORDER BY task, metric"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "runs", help="list training runs, or one run's metrics beside the baselines",
        description="Without RUN_ID: the latest training runs with their headline test metrics. "
        "With RUN_ID: every test metric of that run, model beside majority class and logistic regression.")
    p.add_argument("run_id", nargs="?", help="show this run's metrics")
    p.add_argument("--limit", type=int, default=20, help="most runs listed (default 20)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from affectflow.settings import load_settings
    from warehouse import Warehouse
    from warehouse.catalog import connect

    con = connect(Warehouse(load_settings().home))
    try:
        if not args.run_id:
            print(format_table(con.sql(LIST_SQL, params=[args.limit]).to_arrow_table()))
            return 0
        found = con.execute("SELECT status, checkpoint, error FROM training_runs WHERE run_id = ?",
                            [args.run_id]).fetchall()
        if not found:
            return fail(f"no training run {args.run_id!r}; `affectflow runs` lists them")
        row = found[0]
        print(f"run {args.run_id}: {row[0]}; checkpoint {row[1] or '-'}" + (f"; error: {row[2]}" if row[2] else ""))
        print(format_table(con.sql(METRICS_SQL, params=[args.run_id]).to_arrow_table()))
        return 0
    finally:
        con.close()
