"""Training benchmark on real labelled data, or on a warehouse of yours with a published split.

    python benchmarks/bench_training.py [--data both|openface|ravdess] [--seeds 1] [--epochs 60]
                                        [--window N] [--home DIR]

Without `--home` it builds a fresh warehouse per data set in a temporary folder with the same task
code as `affectflow build-features` and `affectflow resplit`, so `make bench` needs nothing set up:
- `openface`: `--csv-dir` (default ../shared/data/openface-labelled, one OpenFace CSV per emotion)
  through the `openface-csv` extractor, the default grouped split, window 1 (one image per unit).
- `ravdess`: `--video-dir` (default ../shared/data/ravdess-actor05, 14 clips of one actor, labels
  from the file names) through the video path: MediaPipe extraction, then a grouped split sized
  for 14 clips (`RAVDESS_STAGES`), window 16. Too small to judge a model; it exercises the video
  path end to end and the output says so.
With `--home` it trains on that warehouse's split (`--split-id`, default the current one).

For each configuration (all stages; without SSL pretraining; GradNorm; uncertainty weighting;
the transformer encoder) and seed it runs the stages of `tasks.train` on the current split and
prints test scores beside the majority-class and logistic-regression baselines measured on the
same split in the same run, the ratio to logistic regression, and training throughput (frames/s).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from affectflow.settings import load_settings
from data_contracts import load_emotion_map
from data_contracts.splits import Stages
from tasks import evaluate as ev
from tasks import train as tr
from tasks.extract import BuildContext, process_item
from tasks.extractors import kinds_for
from tasks.extractors.base import ExtractOptions
from tasks.media import discover_media
from tasks.publish_split import counts_table, publish_split
from tasks.split import SplitSpec
from warehouse import Warehouse
from warehouse.catalog import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, models_dir, write_results  # noqa: E402

CONFIGS = {
    "all stages (mlp + fixed)": ({}, ("pretrain", "supervised", "pseudo", "finetune")),
    "no SSL pretraining": ({}, ("supervised", "pseudo", "finetune")),
    "supervised only": ({}, ("supervised",)),
    "gradnorm": ({"loss_weighting": "gradnorm"}, ("pretrain", "supervised", "pseudo", "finetune")),
    "uncertainty": ({"loss_weighting": "uncertainty"}, ("pretrain", "supervised", "pseudo", "finetune")),
    "transformer": ({"encoder": "transformer"}, ("pretrain", "supervised", "pseudo", "finetune")),
}
# 14 clips: fear 6, sad 5, and one each of neutral, happy, surprise. Those three are too small to
# stratify and go to pretrain (reported); the default fractions (test 0.15, then pretrain 0.7 of the
# rest) would leave fear and sad one test clip each and nothing for classifier or finetune. Here:
# whole clips held out for test (2 fear + 2 sad: scores are honest, no clip on both sides), no
# labelled clip spent on unlabelled pretraining (pretraining still sees the ssl clips and the three
# small-class clips), and the labelled rest split so that ssl, classifier and finetune each get
# both classes (ssl 2, classifier 3, finetune 2). The same split from the CLI:
# affectflow resplit --test-fraction 0.3 --pretrain-fraction 0 --ssl-fraction 0.25
#                    --classifier-fraction 0.5 --finetune-fraction 0.25
RAVDESS_STAGES = Stages(test=0.3, pretrain=0.0, ssl=0.25, classifier=0.5, finetune=0.25)
RAVDESS_CAVEAT = ("RAVDESS actor 05: 14 clips of one actor, 4 of them in test (2 fear, 2 sad). Far too small to "
                  "judge a model (its README says so): the point is the video path end to end (MediaPipe "
                  "extraction, warehouse, grouped split, every training stage, evaluation). Stress and "
                  "valence/arousal come from the emotion map, which gives fear none, so only the sad clips carry "
                  "them, all alike: stress F1 is trivial and CCC 0 by construction.")
RAVDESS_REMINDER = "4 test clips of one actor: a smoke test of the video path, not a measure of the model."
HEADLINE = [("emotion", "accuracy"), ("emotion", "macro_f1"), ("emotion", "uar"), ("stress", "f1"),
            ("valence", "ccc"), ("arousal", "ccc")]


def build_warehouse(home: Path, source: Path, extractor: str, options: dict, spec: SplitSpec) -> str:
    """A fresh warehouse from `source` through `extractor` and a published split `spec` (what
    `affectflow build-features SOURCE --extractor EXTRACTOR` then `affectflow resplit` do)."""
    if not source.is_dir():
        raise SystemExit(f"no labelled data at {source}; pass --csv-dir / --video-dir or --home")
    settings = load_settings()
    ctx = BuildContext(home, extractor, options, ExtractOptions(min_confidence=settings.min_confidence),
                       source.absolute(), load_emotion_map(settings.emotion_map), None, "bench-training")
    Warehouse(home).init()
    results = [process_item(item, ctx) for item in discover_media(str(source), kinds_for(extractor))]
    bad = [r for r in results if r.status == "quarantined"]
    if bad:
        raise SystemExit(f"{len(bad)} items did not load, e.g. {bad[0].path}: {bad[0].reason}")
    outcome = publish_split(home, spec)
    if outcome.status != "published" or outcome.split_id is None:
        raise SystemExit(f"split not published: {outcome.message}")
    print(f"{sum(r.frames for r in results)} frames from {len(results)} items; split {outcome.split_id} "
          f"(units per partition and class):\n{counts_table(units_table(home, outcome.split_id), ())}")
    return outcome.split_id


def units_table(home: Path, split_id: str) -> pd.DataFrame:
    """Units (videos, or images) per partition and class of a stored split."""
    con = connect(Warehouse(home))
    try:
        long = con.execute("SELECT partition, emotion, units FROM split_summary WHERE split_id = ?", [split_id]).df()
    finally:
        con.close()
    long["emotion"] = long["emotion"].fillna("(unlabelled)")
    table = long.pivot_table(index="partition", columns="emotion", values="units", aggfunc="sum", fill_value=0)
    return table.reindex([p for p in ("pretrain", "ssl", "classifier", "finetune", "test") if p in table.index])


def run_pipeline(data_dir: Path, run_dir: Path, cfg: tr.TrainConfig, stages: tuple[str, ...]) -> tuple[dict, float]:
    shutil.copytree(data_dir, run_dir)
    summaries = []
    if "pretrain" in stages:
        summaries.append(tr.pretrain(run_dir, cfg))
    if "supervised" in stages:
        summaries.append(tr.supervised(run_dir, cfg))
    if "pseudo" in stages:
        tr.pseudo_label(run_dir, cfg)
    if "finetune" in stages:
        summaries.append(tr.finetune(run_dir, cfg))
    return ev.evaluate_run(run_dir, cfg), tr.throughput(summaries) or float("nan")


def _value(results: dict, model: str, task: str, metric: str) -> float:
    return float(results.get(model, {}).get(task, {}).get(metric, float("nan")))


def _row(name: str, scores: list[dict], speed: float | None, model: str = "model") -> str:
    cells = []
    for task, metric in HEADLINE:
        values = np.array([_value(s, model, task, metric) for s in scores])
        cells.append(f"{np.nanmean(values):.3f}±{np.nanstd(values):.3f}" if np.isfinite(values).any() else "      -    ")
    speed_cell = f"{speed:>10.0f}" if speed else f"{'-':>10}"
    return f"{name:<28} " + " ".join(f"{c:>12}" for c in cells) + speed_cell


def _scores_figure(scores: list[dict], model: str) -> dict:
    out = {}
    for task, metric in HEADLINE:
        values = np.array([_value(s, model, task, metric) for s in scores])
        if np.isfinite(values).any():
            out[f"{task}_{metric}"] = {"mean": float(np.nanmean(values)), "sd": float(np.nanstd(values))}
    return out


def run_configs(names: list[str], args: argparse.Namespace, work: Path, device: str) -> dict:
    """Each configuration over the seeds; prints its row and returns its figures."""
    base = tr.TrainConfig(window=args.window, epochs=args.epochs, patience=10, device=device)
    figures = {}
    for name in names:
        changes, stages = CONFIGS[name]
        scores, speeds = [], []
        for seed in range(args.seeds):
            cfg = replace(base, seed=seed, **changes)
            result, speed = run_pipeline(work / "data", work / f"{device}-{name}-{seed}".replace(" ", "_"), cfg, stages)
            scores.append(result)
            speeds.append(speed)
        print(_row(name, scores, float(np.nanmean(speeds))), flush=True)
        logreg = np.nanmean([_value(s, "logreg", "emotion", "macro_f1") for s in scores])
        model = np.nanmean([_value(s, "model", "emotion", "macro_f1") for s in scores])
        ratio = float(model / logreg) if logreg > 0 else float("nan")
        print(f"{'':<28} emotion macro-F1 ratio to logistic regression: "
              + (f"{ratio:.2f}" if np.isfinite(ratio) else f"n/a (logistic regression scores {logreg:.3f})"))
        figures[name] = {"frames_per_s": float(np.nanmean(speeds)), "macro_f1_ratio_to_logreg": ratio,
                         "scores": _scores_figure(scores, "model"), "baselines": {
                             "majority": _scores_figure(scores[:1], "majority"),
                             "logreg": _scores_figure(scores[:1], "logreg")}, "_scores": scores}
    return figures


def gpu_throughput(cpu: dict, args: argparse.Namespace, work: Path) -> dict:
    """The same configurations on the GPU, one seed: frames/s and the ratio to the CPU's."""
    if not torch.cuda.is_available():
        print("GPU: none available here (training throughput measured on CPU only)")
        return {}
    one = argparse.Namespace(**{**vars(args), "seeds": 1})
    gpu = run_configs(list(cpu), one, work, "cuda")
    for name, figures in gpu.items():
        figures["ratio_to_cpu"] = figures["frames_per_s"] / cpu[name]["frames_per_s"]
        print(f"GPU {torch.cuda.get_device_name(0)}: {name}: {figures['frames_per_s']:.0f} frames/s, "
              f"{figures['ratio_to_cpu']:.2f}x the CPU")
    return gpu


def bench_data(title: str, home: Path, split_id: str, args: argparse.Namespace, work: Path,
               caveat: str = "", reminder: str = "") -> dict:
    """Every configuration on one warehouse's split, beside both baselines; returns the figures."""
    work.mkdir(parents=True, exist_ok=True)
    con = connect(Warehouse(home))
    try:
        info = tr.prepare_data(con, split_id, work / "data", args.window)
    finally:
        con.close()
    print(f"\n== {title}: split {info['split_id']}, units {info['units']}, {info['n_features']} features, "
          f"emotions {', '.join(info['emotions'])}; window {args.window}; CPU threads {torch.get_num_threads()}")
    if caveat:
        print(f"NOTE: {caveat}")
    print(f"{'configuration':<28} " + " ".join(f"{t[:7] + ' ' + m:>12}" for t, m in HEADLINE) + f"{'frames/s':>10}")
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    cpu = run_configs(names, args, work, "cpu")
    all_scores = [s for f in cpu.values() for s in f.pop("_scores")]
    print(_row("baseline: majority class", all_scores[:1], None, "majority"))
    print(_row("baseline: logistic regression", all_scores[:1], None, "logreg"))
    if reminder:
        print(f"NOTE: {reminder}")
    gpu = gpu_throughput(cpu, args, work)
    for figures in gpu.values():
        figures.pop("_scores", None)
    return {"split": info["split_id"], "units": info["units"], "frames": info["frames"],
            "emotions": info["emotions"], "window": args.window, "seeds": args.seeds, "epochs": args.epochs,
            "caveat": caveat or None, "cpu": cpu, "gpu": gpu}


def bench_built(name: str, args: argparse.Namespace, work: Path) -> dict:
    """Build a fresh warehouse of data set `name` (openface | ravdess) and bench it."""
    started = time.perf_counter()
    home = work / "home"
    if name == "openface":
        source, caveat, reminder, window = args.csv_dir, "", "", 1
        split_id = build_warehouse(home, source, "openface-csv", {}, SplitSpec())
    else:
        source, caveat, reminder, window = args.video_dir, RAVDESS_CAVEAT, RAVDESS_REMINDER, 16
        options = {"models_dir": models_dir(), "offline": True, "num_faces": 1}
        split_id = build_warehouse(home, source, "mediapipe", options, SplitSpec(stages=RAVDESS_STAGES))
    print(f"warehouse built from {source} in {time.perf_counter() - started:.1f} s")
    run_args = argparse.Namespace(**{**vars(args), "window": args.window or window})
    return {"data": str(source), **bench_data(name, home, split_id, run_args, work, caveat, reminder)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("both", "openface", "ravdess"), default="both",
                        help="which real labelled data to build a warehouse from when --home is not given")
    parser.add_argument("--home", type=Path, help="a warehouse with a published split (default: build one)")
    parser.add_argument("--csv-dir", type=Path, default=SHARED / "data" / "openface-labelled",
                        help="labelled OpenFace CSVs (--data openface)")
    parser.add_argument("--video-dir", type=Path, default=SHARED / "data" / "ravdess-actor05",
                        help="RAVDESS-named video clips (--data ravdess)")
    parser.add_argument("--split-id", default="current")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per configuration (3 reproduce the README table, ~10 min)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--window", type=int, help="frames per window (default 1 for openface images, 16 for "
                        "ravdess videos, 1 with --home)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(tempfile.mkdtemp(prefix="bench_training_"))
    if args.home is not None:
        run_args = argparse.Namespace(**{**vars(args), "window": args.window or 1})
        figures = {"warehouse": {"data": str(args.home),
                                 **bench_data(str(args.home), args.home, args.split_id, run_args, work / "warehouse")}}
    else:
        names = ["openface", "ravdess"] if args.data == "both" else [args.data]
        figures = {name: bench_built(name, args, work / name) for name in names}
    write_results("training", figures)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
