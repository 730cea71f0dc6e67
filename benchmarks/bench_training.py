"""Training benchmark on the labelled OpenFace data, or on a warehouse of yours with a published split.

    python benchmarks/bench_training.py [--seeds 1] [--epochs 60] [--window 1] [--home DIR]

Without `--home` it builds a fresh warehouse in a temporary folder from `--csv-dir` (default
../shared/data/openface-labelled: one OpenFace CSV per emotion) with the same task code as
`affectflow build-features DIR --extractor openface-csv` and `affectflow resplit` (default
grouped split), so `make bench` needs nothing set up. With `--home` it trains on that warehouse's
split (`--split-id`, default the current one).

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
import torch

from affectflow.settings import load_settings
from data_contracts import load_emotion_map
from tasks import evaluate as ev
from tasks import train as tr
from tasks.extract import BuildContext, process_item
from tasks.extractors.base import ExtractOptions
from tasks.media import discover_media
from tasks.publish_split import publish_split
from tasks.split import SplitSpec
from warehouse import Warehouse
from warehouse.catalog import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, write_results  # noqa: E402

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


def build_warehouse(home: Path, csv_dir: Path) -> str:
    """A fresh warehouse from a folder of labelled OpenFace CSVs and a published default split
    (what `affectflow build-features DIR --extractor openface-csv` then `affectflow resplit` do)."""
    if not csv_dir.is_dir():
        raise SystemExit(f"no labelled OpenFace CSVs at {csv_dir}; pass --csv-dir or --home")
    settings = load_settings()
    ctx = BuildContext(home, "openface-csv", {}, ExtractOptions(min_confidence=settings.min_confidence),
                       csv_dir.absolute(), load_emotion_map(settings.emotion_map), None, "bench-training")
    Warehouse(home).init()
    results = [process_item(item, ctx) for item in discover_media(str(csv_dir), ("csv",))]
    bad = [r for r in results if r.status == "quarantined"]
    if bad:
        raise SystemExit(f"{len(bad)} CSVs did not load, e.g. {bad[0].path}: {bad[0].reason}")
    outcome = publish_split(home, SplitSpec())
    if outcome.status != "published" or outcome.split_id is None:
        raise SystemExit(f"split not published: {outcome.message}")
    return outcome.split_id


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
        print(f"{'':<28} emotion macro-F1 ratio to logistic regression: {model / logreg:.2f}")
        figures[name] = {"frames_per_s": float(np.nanmean(speeds)), "macro_f1_ratio_to_logreg": float(model / logreg),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="a warehouse with a published split (default: build one)")
    parser.add_argument("--csv-dir", type=Path, default=SHARED / "data" / "openface-labelled",
                        help="labelled OpenFace CSVs to build the warehouse from when --home is not given")
    parser.add_argument("--split-id", default="current")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per configuration (3 reproduce the README table, ~10 min)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--window", type=int, default=1, help="frames per window (1 for image data)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(tempfile.mkdtemp(prefix="bench_training_"))
    home = args.home
    if home is None:
        started = time.perf_counter()
        home = work / "home"
        args.split_id = build_warehouse(home, args.csv_dir)
        print(f"warehouse built from {args.csv_dir} in {time.perf_counter() - started:.1f} s")
    info = tr.prepare_data(connect(Warehouse(home)), args.split_id, work / "data", args.window)
    print(f"split {info['split_id']}: units {info['units']}, {info['n_features']} features, "
          f"{len(info['emotions'])} emotions; CPU threads {torch.get_num_threads()}")
    print(f"{'configuration':<28} " + " ".join(f"{t[:7] + ' ' + m:>12}" for t, m in HEADLINE) + f"{'frames/s':>10}")
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    cpu = run_configs(names, args, work, "cpu")
    all_scores = [s for f in cpu.values() for s in f.pop("_scores")]
    print(_row("baseline: majority class", all_scores[:1], None, "majority"))
    print(_row("baseline: logistic regression", all_scores[:1], None, "logreg"))
    gpu = gpu_throughput(cpu, args, work)
    for figures in gpu.values():
        figures.pop("_scores", None)
    write_results("training", {"data": str(args.csv_dir) if args.home is None else str(home), "split": info["split_id"],
                               "units": info["units"], "seeds": args.seeds, "epochs": args.epochs,
                               "cpu": cpu, "gpu": gpu})
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
