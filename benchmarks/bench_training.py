"""Training benchmark on a warehouse that already has features and a published split.

    affectflow build-features ../shared/data/openface-labelled --extractor openface-csv
    affectflow resplit
    python benchmarks/bench_training.py [--seeds 3] [--epochs 60] [--window 1]

For each configuration (all stages; without SSL pretraining; GradNorm; uncertainty weighting;
the transformer encoder) and seed it runs the stages of `tasks.train` on the current split and
prints test scores beside the majority-class and logistic-regression baselines measured on the
same split in the same run, the ratio to logistic regression, and training throughput (frames/s).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from affectflow.settings import load_settings
from tasks import evaluate as ev
from tasks import train as tr
from warehouse import Warehouse
from warehouse.catalog import connect

CONFIGS = {
    "all stages (mlp + fixed)": ({}, ("pretrain", "supervised", "pseudo", "finetune")),
    "no SSL pretraining": ({}, ("supervised", "pseudo", "finetune")),
    "supervised only": ({}, ("supervised",)),
    "gradnorm": ({"loss_weighting": "gradnorm"}, ("pretrain", "supervised", "pseudo", "finetune")),
    "uncertainty": ({"loss_weighting": "uncertainty"}, ("pretrain", "supervised", "pseudo", "finetune")),
    "transformer": ({"encoder": "transformer"}, ("pretrain", "supervised", "pseudo", "finetune")),
}
HEADLINE = [("emotion", "accuracy"), ("emotion", "macro_f1"), ("emotion", "uar"), ("stress", "f1"),
            ("valence", "ccc"), ("arousal", "ccc")]


def run_pipeline(data_dir: Path, run_dir: Path, cfg: tr.TrainConfig, stages: tuple[str, ...]) -> tuple[dict, float]:
    shutil.copytree(data_dir, run_dir)
    summaries = []
    if "pretrain" in stages:
        tr.pretrain(run_dir, cfg)
    if "supervised" in stages:
        summaries.append(tr.supervised(run_dir, cfg))
    if "pseudo" in stages:
        tr.pseudo_label(run_dir, cfg)
    if "finetune" in stages:
        summaries.append(tr.finetune(run_dir, cfg))
    speeds = [s["frames_per_s"] for s in summaries if s.get("frames_per_s")]
    return ev.evaluate_run(run_dir, cfg), float(np.mean(speeds)) if speeds else float("nan")


def _value(results: dict, model: str, task: str, metric: str) -> float:
    return float(results.get(model, {}).get(task, {}).get(metric, float("nan")))


def _row(name: str, scores: list[dict], speed: float | None, model: str = "model") -> str:
    cells = []
    for task, metric in HEADLINE:
        values = np.array([_value(s, model, task, metric) for s in scores])
        cells.append(f"{np.nanmean(values):.3f}±{np.nanstd(values):.3f}" if np.isfinite(values).any() else "      -    ")
    speed_cell = f"{speed:>10.0f}" if speed else f"{'-':>10}"
    return f"{name:<28} " + " ".join(f"{c:>12}" for c in cells) + speed_cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split-id", default="current")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--window", type=int, default=1, help="frames per window (1 for image data)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(tempfile.mkdtemp(prefix="bench_training_"))
    info = tr.prepare_data(connect(Warehouse(load_settings().home)), args.split_id, work / "data", args.window)
    print(f"split {info['split_id']}: units {info['units']}, {info['n_features']} features, "
          f"{len(info['emotions'])} emotions; device {tr.resolve_device('auto')}")
    header = f"{'configuration':<28} " + " ".join(f"{t[:7] + ' ' + m:>12}" for t, m in HEADLINE) + f"{'frames/s':>10}"
    print(header)
    base = tr.TrainConfig(window=args.window, epochs=args.epochs, patience=10)
    all_scores = []
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        changes, stages = CONFIGS[name]
        scores, speeds = [], []
        for seed in range(args.seeds):
            cfg = replace(base, seed=seed, **changes)
            result, speed = run_pipeline(work / "data", work / f"{name}-{seed}".replace(" ", "_"), cfg, stages)
            scores.append(result)
            speeds.append(speed)
        all_scores += scores
        print(_row(name, scores, float(np.nanmean(speeds))), flush=True)
        logreg = np.nanmean([_value(s, "logreg", "emotion", "macro_f1") for s in scores])
        model = np.nanmean([_value(s, "model", "emotion", "macro_f1") for s in scores])
        print(f"{'':<28} emotion macro-F1 ratio to logistic regression: {model / logreg:.2f}")
    print(_row("baseline: majority class", all_scores[:1], None, "majority"))
    print(_row("baseline: logistic regression", all_scores[:1], None, "logreg"))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
