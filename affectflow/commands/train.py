"""`affectflow train`: run the train flow here, without a server (same parameters as the UI form)."""

from __future__ import annotations

import argparse
import json

from affectflow.commands._common import fail, parameter_error

STAGE_FLAGS = ("pretrain", "supervised", "pseudo_labels", "finetune")
SWITCHES = {"select_regularisation": "choose weight decay and dropout by validation loss",
            "class_weights": "weight emotion classes inversely to their training units"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train and evaluate the multitask model on a split",
        description="Pretrain (masked feature reconstruction), train (emotion, stress, valence-arousal) and "
        "evaluate on the split's test holdout beside majority-class and logistic-regression baselines "
        "trained on the same units. Protocol pooled (default): every labelled training unit trains an "
        "ensemble; research: the research pipeline's stages (classifier, pseudo-labels, finetune). "
        "Writes a checkpoint under $AFFECTFLOW_HOME/runs/<run_id>/ and rows in the training_runs and "
        "metrics tables.")
    p.add_argument("--split-id", help="split version (default: current)")
    p.add_argument("--protocol", help="pooled | research (default pooled)")
    p.add_argument("--extractor", help="train on this extractor's units (needed when the split mixes extractors)")
    for stage in STAGE_FLAGS:
        p.add_argument(f"--no-{stage.replace('_', '-')}", dest=stage, action="store_false", default=None,
                       help=f"skip the {stage.replace('_', ' ')} stage")
    for name, what in SWITCHES.items():
        p.add_argument(f"--no-{name.replace('_', '-')}", dest=name, action="store_false", default=None,
                       help=f"do not {what} (pooled protocol)")
    p.add_argument("--personalise", action="store_true", default=None,
                   help="pooled: fine-tune on the finetune partition instead of training on it with the rest")
    p.add_argument("--encoder", help="linear | mlp | transformer (default linear)")
    p.add_argument("--ensemble", type=int, help="models averaged, one per fold (default 5; 1: one model)")
    p.add_argument("--label-smoothing", type=float, help="pooled protocol: label smoothing of the emotion loss "
                   "in training, 0 <= s < 1 (default 0.1; 0: none; validation is never smoothed)")
    p.add_argument("--epochs", type=int, help="most epochs per fit (default 200, early stopping ends sooner)")
    p.add_argument("--batch-size", type=int, help="windows per batch (default 64)")
    p.add_argument("--lr", dest="learning_rate", type=float, help="learning rate (default 3e-3)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay when not selected (default 1e-2)")
    p.add_argument("--dropout", type=float, help="dropout when not selected (default 0.1)")
    p.add_argument("--loss-weighting", help="fixed | uncertainty | gradnorm (default fixed)")
    p.add_argument("--tasks", help="comma-separated: emotion,stress,valence_arousal (default all)")
    p.add_argument("--pseudo-label-threshold", type=float, help="least confidence for a pseudo-label (default 0.6)")
    p.add_argument("--window", type=int, help="frames per window (default 16; images use 1)")
    p.add_argument("--hidden", type=int, help="encoder width (default 64)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 20)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--max-minutes", type=float, help="stop training after this long (default 60)")
    p.add_argument("--device", help="auto | cpu | cuda (default auto)")
    p.add_argument("--threads", type=int, help="CPU threads (default 0: one for small fits, else all)")
    p.add_argument("--resume", dest="run_id", metavar="RUN_ID", help="resume an interrupted run")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=run)


def precheck(split_id: str | None, run_id: str | None) -> str | None:
    """The commonest mistakes answered before Prefect and torch are even imported: no published
    split, an unknown split id, an unknown run to resume. None when nothing is wrong (or the
    warehouse is in an object store, where the flow checks). Reads the Parquet with DuckDB only."""
    from affectflow.settings import load_settings

    settings = load_settings()
    if run_id and not (settings.runs_dir / run_id).is_dir():
        return f"no run {run_id!r} to resume in {settings.runs_dir}; `affectflow runs` lists them"
    if settings.warehouse_url:
        return None
    import duckdb

    def found(table: str, sql: str, params: list) -> bool:
        files = [str(f) for f in (settings.parquet_dir / table).glob("*.parquet")]
        return bool(files) and bool(duckdb.execute(sql, [files, *params]).fetchall())

    if not split_id or split_id == "current":
        ok = found("split_runs", "SELECT 1 FROM read_parquet(?) WHERE status = 'published' LIMIT 1", [])
        return None if ok else "no published split yet; run `affectflow resplit` first"
    ok = found("splits", "SELECT 1 FROM read_parquet(?) WHERE split_id = ? LIMIT 1", [split_id])
    return None if ok else f"split {split_id!r} not found; `affectflow splits --list` lists them"


def _params(args: argparse.Namespace):
    from flows.train_params import TrainParams

    given = {k: v for k, v in vars(args).items() if k in TrainParams.model_fields and v is not None}
    if isinstance(given.get("tasks"), str):
        given["tasks"] = [t.strip() for t in given["tasks"].split(",") if t.strip()]
    return TrainParams(**given)


def run(args: argparse.Namespace) -> int:
    try:  # what was typed first (pydantic only), then what the warehouse has: both before Prefect or torch load
        params = _params(args)
    except ValueError as exc:
        return fail(f"bad parameters: {parameter_error(exc) or exc}")
    problem = precheck(args.split_id, args.run_id)
    if problem:
        return fail(problem, code=1)
    from flows.train import train
    from tasks.errors import SetupError

    try:
        summary = train(params)
    except (SetupError, OSError) as exc:
        return fail(str(exc), code=1)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    used = summary.get("trained_on") or {}
    print(f"run {summary['run_id']} on split {summary['split_id']}; checkpoint {summary['checkpoint']}")
    print(f"protocol {summary['protocol']}: the model and the baselines learnt from the same {used.get('units')} "
          f"labelled units ({' + '.join(used.get('partitions', []))}); {summary['features']}")
    if summary.get("no_test"):
        print(summary["no_test"])
        return
    print(f"{'task':<8} {'metric':<9} {'model':>8} {'majority':>9} {'logreg':>8}")
    for row in summary["metrics"]:
        cells = ["-" if row[m] is None else f"{row[m]:.4f}" for m in ("model", "majority", "logreg")]
        print(f"{row['task']:<8} {row['metric']:<9} {cells[0]:>8} {cells[1]:>9} {cells[2]:>8}")
