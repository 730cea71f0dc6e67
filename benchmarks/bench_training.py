"""Training benchmark on real labelled data: the default `affectflow train` beside logistic
regression and gradient boosting trained on the same units in the same run.

    python benchmarks/bench_training.py [--data both|openface|ravdess] [--seeds 5] [--configs ...] [--skip ...]
                                        [--home DIR --split-id ID]

Without `--home` it builds a fresh warehouse per data set in a temporary folder with the
`build-features` flow (in-process, against a private Prefect server) and the task code of
`affectflow resplit`, so `make bench` needs nothing set up:
- `openface`: ../shared/data/openface-labelled (433 posed images, 8 emotions, one OpenFace CSV per
  emotion) through the `openface-csv` extractor; two grouped splits with the same 15% test
  holdout: the default fractions (70% of the rest unlabelled pretrain) and all labelled
  (`--pretrain-fraction 0`, then `--mode reshuffle`, which keeps the holdout).
- `ravdess`: ../shared/data/ravdess-actor05 (14 clips of one actor) through MediaPipe, a grouped
  split sized for 14 clips (`RAVDESS_STAGES`). Far too small to judge a model; it exercises the
  video path and the output says so.

Each configuration runs over `--seeds` seeds; printed: mean ± sd of emotion accuracy, macro-F1,
UAR, stress F1, valence and arousal CCC on the split's test holdout, and CPU seconds of training
(all stages, process CPU time, so every thread counts). Beside them, measured once per split on
exactly the units the model learnt from (they do not depend on the seed): the majority class,
logistic regression (emotion, stress; ridge regression for valence/arousal: a linear model for
each task) and scikit-learn's histogram gradient boosting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import Ridge

from data_contracts.splits import Stages
from tasks import evaluate as ev
from tasks import train as tr
from tasks.publish_split import counts_table, publish_split, summary
from tasks.split import SplitSpec
from tasks.training_data import labelled_units
from warehouse import Warehouse
from warehouse.catalog import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, models_dir, prefect_server, write_results  # noqa: E402

# name -> (changes to the default TrainConfig, run the pretraining stage)
CONFIGS = {
    "default": ({}, True),
    "no SSL pretraining": ({}, False),
    "gradnorm": ({"loss_weighting": "gradnorm"}, True),
    "one model (ensemble 1)": ({"ensemble": 1}, True),
    "research protocol": ({"protocol": "research"}, True),
}
DEFAULT_CONFIGS = {"openface/all labelled": ["default", "no SSL pretraining", "gradnorm", "one model (ensemble 1)",
                                             "research protocol"],
                   "openface/default split": ["default", "research protocol"],
                   "ravdess": ["default", "no SSL pretraining", "research protocol"]}
ALL_LABELLED = Stages(test=0.15, pretrain=0.0)
# 14 clips: fear 6, sad 5, one each of neutral, happy, surprise (too small to stratify: pretrain).
# Whole clips held out for test (2 fear + 2 sad), no labelled clip spent on unlabelled pretraining.
# From the CLI: affectflow resplit --test-fraction 0.3 --pretrain-fraction 0 --ssl-fraction 0.25
#               --classifier-fraction 0.5 --finetune-fraction 0.25
RAVDESS_STAGES = Stages(test=0.3, pretrain=0.0, ssl=0.25, classifier=0.5, finetune=0.25)
RAVDESS_CAVEAT = ("RAVDESS actor 05: 14 clips of one actor, 4 of them in test (2 fear, 2 sad). Far too small to "
                  "judge a model: the point is the video path end to end. Stress and valence/arousal come from the "
                  "emotion map, which gives fear none, so only the sad clips carry them, all alike: stress F1 is "
                  "trivial and CCC 0 by construction.")
HEADLINE = [("emotion", "accuracy"), ("emotion", "macro_f1"), ("emotion", "uar"), ("stress", "f1"),
            ("valence", "ccc"), ("arousal", "ccc")]


def build_warehouse(home: Path, source: Path, extractor: str) -> None:
    """A fresh warehouse from `source` through `extractor`: the `build-features` flow itself, run
    in-process against the private Prefect server `main` starts."""
    from flows.build_features import build_features

    if not source.is_dir():
        raise SystemExit(f"no labelled data at {source}; pass --csv-dir / --video-dir or --home")
    os.environ.update({"AFFECTFLOW_HOME": str(home), "AFFECTFLOW_MODELS_DIR": str(models_dir()),
                       "AFFECTFLOW_OFFLINE": "1"})
    summary = build_features(source=str(source), extractor=extractor, num_faces=1, workers=1)
    if summary["loaded"] != summary["items"]:
        raise SystemExit(f"build-features loaded {summary['loaded']} of {summary['items']} items of {source}: "
                         f"{summary['quarantine_reasons']}")
    print(f"{summary['frames']} frames from {summary['items']} items of {source}")


def publish(home: Path, stages: Stages, mode: str = "stable") -> str:
    """A published grouped split (what `affectflow resplit` does); prints its units per partition."""
    outcome = publish_split(home, SplitSpec(stages=stages), mode)
    if outcome.status != "published" or outcome.split_id is None:
        raise SystemExit(f"split not published: {outcome.message}")
    con = connect(Warehouse(home))
    try:
        print(f"split {outcome.split_id} (units per partition and class):\n"
              f"{counts_table(summary(con, outcome.split_id), ())}")
    finally:
        con.close()
    return outcome.split_id


def _gboost(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, seed: int, regress: bool = False) -> np.ndarray:
    keep = ~np.isnan(y) if regress else y >= 0
    if regress:
        return HistGradientBoostingRegressor(random_state=seed).fit(x[keep], y[keep]).predict(x_test)
    if len(np.unique(y[keep])) < 2:
        return np.full(len(x_test), y[keep][0] if keep.any() else 0)
    return HistGradientBoostingClassifier(random_state=seed).fit(x[keep], y[keep]).predict(x_test)


def _ridge(x: np.ndarray, y: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    keep = ~np.isnan(y)
    return Ridge().fit(x[keep], y[keep]).predict(x_test) if keep.sum() > 1 else np.full(len(x_test), np.nanmean(y))


def baselines(prepared) -> dict:
    """Majority, logistic regression (+ ridge for valence/arousal) and gradient boosting, fitted
    on the units the model learnt from (`labelled_units`), scored on the test units."""
    train, test = labelled_units(prepared), prepared.parts["test"]
    n = len(prepared.emotions)
    logreg = ev.logreg_baseline(prepared)
    va_linear = np.stack([_ridge(train.means, train.va[:, j], test.means) for j in (0, 1)], 1)
    logreg.update(ev.score(test, va_pred=va_linear))
    gb = ev.score(test, _gboost(train.means, train.emotion, test.means, 0),
                  _gboost(train.means, train.stress, test.means, 0),
                  np.stack([_gboost(train.means, train.va[:, j], test.means, 0, True) for j in (0, 1)], 1), n)
    return {"majority": ev.majority_baseline(prepared), "logreg": logreg, "gboost": gb}


def run_once(data_dir: Path, run_dir: Path, cfg: tr.TrainConfig, pretrain: bool) -> tuple[dict, float]:
    """Every stage of one run on the prepared data; the test scores and the CPU seconds it took."""
    shutil.copytree(data_dir, run_dir)
    started = time.process_time()
    if pretrain:
        tr.pretrain(run_dir, cfg)
    tr.supervised(run_dir, cfg)
    tr.pseudo_label(run_dir, cfg)
    tr.finetune(run_dir, cfg)
    cpu = time.process_time() - started
    prepared = tr.load_prepared(run_dir)
    scores = ev.model_scores(tr.build_model(run_dir, cfg, prepared), prepared)
    shutil.rmtree(run_dir, ignore_errors=True)
    return scores, cpu


def _values(scores: list[dict], task: str, metric: str) -> np.ndarray:
    return np.array([float(s.get(task, {}).get(metric, np.nan)) for s in scores])


def _cells(scores: list[dict]) -> list[str]:
    cells = []
    for task, metric in HEADLINE:
        v = _values(scores, task, metric)
        cells.append("-" if not np.isfinite(v).any() else
                     f"{np.nanmean(v):.3f}" if len(v) == 1 else f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}")
    return cells


def _figure(scores: list[dict]) -> dict:
    out = {}
    for task, metric in HEADLINE:
        v = _values(scores, task, metric)
        if np.isfinite(v).any():
            out[f"{task}_{metric}"] = {"mean": float(np.nanmean(v)), "sd": float(np.nanstd(v)),
                                       "values": [float(x) for x in v]}
    return out


def _row(name: str, cells: list[str], extra: str = "") -> str:
    return f"| {name} | " + " | ".join(cells) + f" | {extra} |"


def bench_split(title: str, home: Path, split_id: str, names: list[str], args: argparse.Namespace, work: Path,
                window: int, device: str = "cpu") -> dict:
    """Each configuration over the seeds on one split, beside the baselines of its protocol's units."""
    prepared_dirs: dict[str, Path] = {}
    figures: dict = {"split": split_id, "window": window, "seeds": args.seeds, "configs": {}, "baselines": {}}
    print(f"\n== {title}: split {split_id}, {args.seeds} seeds, window {window}, CPU threads: the default "
          f"(one for fits under {tr.SMALL_FIT_WINDOWS:,} windows, else {torch.get_num_threads()})")
    print("| configuration | " + " | ".join(f"{t} {m}" for t, m in HEADLINE) + " | CPU s (training) |")
    print("|---" * (len(HEADLINE) + 2) + "|")
    for name in names:
        changes, pretrain = CONFIGS[name]
        base = replace(tr.TrainConfig(window=window, device=device), **changes)
        if base.protocol not in prepared_dirs:
            con = connect(Warehouse(home))
            try:
                info = tr.prepare_data(con, split_id, work / f"data-{base.protocol}", window, base.protocol)
            finally:
                con.close()
            prepared_dirs[base.protocol] = work / f"data-{base.protocol}"
            prepared = tr.load_prepared(prepared_dirs[base.protocol])
            figures["baselines"][base.protocol] = {"trained_on": ev.trained_on(prepared), "units": info["units"],
                                                   **{k: _figure([v]) for k, v in baselines(prepared).items()}}
        runs = [run_once(prepared_dirs[base.protocol], work / f"run-{len(figures['configs'])}-{seed}",
                         replace(base, seed=seed), pretrain) for seed in range(args.seeds)]
        scores, cpu = [s for s, _ in runs], np.array([c for _, c in runs])
        figures["configs"][name] = {"protocol": base.protocol, "scores": _figure(scores),
                                    "cpu_s": {"mean": float(cpu.mean()), "sd": float(cpu.std())}}
        print(_row(name, _cells(scores), f"{cpu.mean():.1f} ± {cpu.std():.1f}"), flush=True)
    for found in figures["baselines"].values():
        used = found["trained_on"]
        for key, label in (("majority", "majority class"), ("logreg", "logistic regression (ridge for V/A)"),
                           ("gboost", "gradient boosting (sklearn HistGB)")):
            cells = [f"{found[key][f'{t}_{m}']['mean']:.3f}" if f"{t}_{m}" in found[key] else "-" for t, m in HEADLINE]
            print(_row(f"{label}, {used['units']} units of {'+'.join(used['partitions'])}", cells))
    _ratios(figures)
    return figures


def _ratios(figures: dict) -> None:
    """The default configuration's macro-F1 as a ratio of logistic regression's on the same units."""
    for name, found in figures["configs"].items():
        lr = figures["baselines"][found["protocol"]]["logreg"].get("emotion_macro_f1", {}).get("mean")
        f1 = found["scores"].get("emotion_macro_f1", {}).get("mean")
        if lr and f1 is not None:
            found["macro_f1_ratio_to_logreg"] = f1 / lr
            print(f"{name}: emotion macro-F1 {f1:.3f} = {f1 / lr:.2f}x logistic regression's {lr:.3f} "
                  f"(same {found['protocol']} units, same run)")


def gpu_check(home: Path, split_id: str, work: Path, window: int) -> dict:
    """The default configuration once on the GPU (when there is one): scores and wall time."""
    if not torch.cuda.is_available():
        print("GPU: none available here (training measured on CPU only)")
        return {}
    args = argparse.Namespace(seeds=1)
    started = time.perf_counter()
    figures = bench_split("GPU (cuda), default configuration", home, split_id, ["default"], args, work / "gpu",
                          window, "cuda")
    figures["wall_s"] = time.perf_counter() - started
    figures["device"] = torch.cuda.get_device_name(0)
    return figures


def _chosen(args: argparse.Namespace, title: str) -> list[str]:
    """The configurations to run on one split: `--configs`, else its defaults, less `--skip`."""
    return [n for n in args.configs or DEFAULT_CONFIGS[title] if n not in (args.skip or [])]


def bench_openface(args: argparse.Namespace, work: Path) -> dict:
    home = work / "openface"
    build_warehouse(home, args.csv_dir, "openface-csv")
    default_split = publish(home, Stages())
    all_labelled = publish(home, ALL_LABELLED, mode="reshuffle")  # same test holdout, every label used
    out = {"data": str(args.csv_dir)}
    for title, split_id in (("openface/all labelled", all_labelled), ("openface/default split", default_split)):
        names = _chosen(args, title)
        out[title.split("/")[1]] = bench_split(title, home, split_id, names, args, work / title.replace("/", "-"), 1)
    out["gpu"] = gpu_check(home, all_labelled, work, 1)
    return out


def bench_ravdess(args: argparse.Namespace, work: Path) -> dict:
    home = work / "ravdess"
    build_warehouse(home, args.video_dir, "mediapipe")
    split_id = publish(home, RAVDESS_STAGES)
    print(f"NOTE: {RAVDESS_CAVEAT}")
    figures = bench_split("ravdess", home, split_id, _chosen(args, "ravdess"), args,
                          work / "ravdess-runs", 16)
    return {"data": str(args.video_dir), "caveat": RAVDESS_CAVEAT, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("both", "openface", "ravdess"), default="both")
    parser.add_argument("--home", type=Path, help="bench a warehouse of yours instead (with --split-id)")
    parser.add_argument("--split-id", default="current")
    parser.add_argument("--window", type=int, default=16, help="frames per window with --home")
    parser.add_argument("--csv-dir", type=Path, default=SHARED / "data" / "openface-labelled")
    parser.add_argument("--video-dir", type=Path, default=SHARED / "data" / "ravdess-actor05")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per configuration (default 5)")
    parser.add_argument("--configs", type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
                        help=f"comma-separated subset of: {', '.join(CONFIGS)}")
    parser.add_argument("--skip", type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
                        help="comma-separated configurations to leave out (a shorter run on a busy machine)")
    args = parser.parse_args()
    unknown = [n for n in (args.configs or []) + (args.skip or []) if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration {unknown[0]!r}; choose from: {', '.join(CONFIGS)}")
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench_training_"))
    try:
        if args.home is not None:
            names = args.configs or ["default"]
            figures = {"warehouse": bench_split(str(args.home), args.home, args.split_id, names, args, work, args.window)}
        else:
            figures = {}
            with prefect_server():  # build-features is a flow: its runs need a server
                if args.data in ("both", "openface"):
                    figures["openface"] = bench_openface(args, work)
                if args.data in ("both", "ravdess"):
                    figures["ravdess"] = bench_ravdess(args, work)
        figures["wall_s"] = time.perf_counter() - started
        write_results("training", figures)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
