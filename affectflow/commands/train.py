"""`affectflow train`: run the train flow here, without a server (same parameters as the UI form)."""

from __future__ import annotations

import argparse
import json

from affectflow.commands._common import fail, parameter_error
from tasks.errors import SetupError

STAGE_FLAGS = ("pretrain", "supervised", "pseudo_labels", "finetune")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train and evaluate the multitask model on a split",
        description="Pretrain (masked feature reconstruction), train (emotion, stress, valence-arousal), "
        "pseudo-label, fine-tune and evaluate on the split's test holdout beside majority-class and "
        "logistic-regression baselines. Writes a checkpoint under $AFFECTFLOW_HOME/runs/<run_id>/ "
        "and rows in the training_runs and metrics tables.")
    p.add_argument("--split-id", help="split version (default: current)")
    for stage in STAGE_FLAGS:
        p.add_argument(f"--no-{stage.replace('_', '-')}", dest=stage, action="store_false", default=None,
                       help=f"skip the {stage.replace('_', ' ')} stage")
    p.add_argument("--encoder", help="mlp | transformer (default mlp)")
    p.add_argument("--epochs", type=int, help="most epochs per stage (default 30)")
    p.add_argument("--batch-size", type=int, help="windows per batch (default 64)")
    p.add_argument("--lr", dest="learning_rate", type=float, help="learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 1e-4)")
    p.add_argument("--loss-weighting", help="fixed | uncertainty | gradnorm (default fixed)")
    p.add_argument("--tasks", help="comma-separated: emotion,stress,valence_arousal (default all)")
    p.add_argument("--pseudo-label-threshold", type=float, help="least confidence for a pseudo-label (default 0.6)")
    p.add_argument("--window", type=int, help="frames per window (default 16)")
    p.add_argument("--hidden", type=int, help="encoder width (default 64)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 8)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--max-minutes", type=float, help="stop training after this long (default 60)")
    p.add_argument("--device", help="auto | cpu | cuda (default auto)")
    p.add_argument("--resume", dest="run_id", metavar="RUN_ID", help="resume an interrupted run")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=run)


def _params(args: argparse.Namespace):
    from flows.train import TrainParams

    given = {k: v for k, v in vars(args).items() if k in TrainParams.model_fields and v is not None}
    if isinstance(given.get("tasks"), str):
        given["tasks"] = [t.strip() for t in given["tasks"].split(",") if t.strip()]
    return TrainParams(**given)


def run(args: argparse.Namespace) -> int:
    try:
        params = _params(args)
    except ValueError as exc:
        return fail(f"bad parameters: {parameter_error(exc) or exc}")
    from flows.train import train

    try:
        summary = train(params)
    except (SetupError, OSError) as exc:
        return fail(str(exc))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    print(f"run {summary['run_id']} on split {summary['split_id']}; checkpoint {summary['checkpoint']}")
    print(f"{'task':<8} {'metric':<9} {'model':>8} {'majority':>9} {'logreg':>8}")
    for row in summary["metrics"]:
        cells = ["-" if row[m] is None else f"{row[m]:.4f}" for m in ("model", "majority", "logreg")]
        print(f"{row['task']:<8} {row['metric']:<9} {cells[0]:>8} {cells[1]:>9} {cells[2]:>8}")
    return 0
