"""py-feat's candidate models, one role at a time: weight size, seconds per frame and peak RSS, each
beside the default set measured in the same run (issue #9: the lightest set that still gives
landmarks, pose, AUs and emotions).

Candidates are what py-feat 2.1.5's `Detectorv1` accepts per role (its `SUPPORTED_MODELS`): face
`retinaface` | `img2pose`; landmark `mobilefacenet` | `mobilenet` | `pfld`; AU `xgb` | `svm`;
emotion `svm` | `resmasknet`; pose `pose_mlp` (from retinaface's landmarks) | `img2pose` (which finds
faces and regresses pose in one network, so it stands in for both roles). Each run changes one role
of the default set (`tasks.pyfeat_weights.DEFAULT_MODELS`), in its own process (its own peak RSS),
through raw py-feat: `Detectorv1.detect(tensor, data_type="tensor")` on the first `--frames` frames
of py-feat's sample `WolfgangLanger_Pexels.mp4` (640x360, decoded with OpenCV, untimed), `--batch`
frames per call, after a one-frame warm-up, with `--threads` torch threads (1: py-feat's own
setting). A run stops early, at a whole batch, when the next batch would take it past `--budget`
seconds, so slow candidates cost bounded time; its per-frame figures are over the frames it ran. The
default set runs first and again last, to show how much the machine drifted in between.

Compared: CPU seconds of the process per frame (with one thread, the work done; little moved by
other load on a shared machine). Wall seconds per frame are shown too. "added" is a candidate's CPU
seconds per frame minus the default set's: what choosing it adds (or saves) per frame and face.

Weights are generated (tests/pyfeat_fake_weights.py): random values in the formats and shapes
py-feat loads, which cost what the real ones cost, except that
- the generated HOG heads' PCAs keep 64 components, where the real files' sizes imply about
  1,000-1,400: about 1 ms more per face and PCA with the real ones (xgb and svm AU use 3, svm
  emotion 1), small beside the figures here;
- the generated face detectors find known faces: retinaface one per frame, img2pose none (the
  models after it then run on one blank crop per frame, which costs what one face costs; img2pose's
  postprocessing of candidate boxes is left out, so its figure is a lower bound).
Sizes: "hub MB" is the real file (the pinned size in `tasks.pyfeat_weights`, else the size the
hub's file listing shows, rounded as listed; where neither is known, "~" and the generated size:
only `pose_mlp_v2.safetensors`, generated with py-feat's v2 layer sizes 512/256/128, 0.9 MB);
"params MB" is the generated file, the parameters alone (py-feat's landmark `.pth.tar` files on
the hub also carry optimizer state, about 3x the parameters).

    .venv/bin/python benchmarks/bench_pyfeat_models.py [--frames 24] [--batch 8] [--budget 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import feat_data, header, self_peak_rss_mb, write_results  # noqa: E402

VIDEO = "WolfgangLanger_Pexels.mp4"
WEIGHTS_DIR = Path(tempfile.gettempdir()) / "affectflow-bench-pyfeat-models"
DEFAULT = "default"
# One role changed at a time; `img2pose` replaces both the face detector and the pose model.
CANDIDATES = (DEFAULT, "landmark=pfld", "landmark=mobilenet", "au=svm", "emotion=resmasknet", "face=img2pose")
# Files affectflow has no pin for, as the hub's file listings show them (huggingface.co/py-feat/<repo>).
HUB_LISTED_MB = {"py-feat/mobilenet/mobilenet_224_model_best_gdconv_external.pth.tar": 45.3,
                 "py-feat/pfld/pfld_model_best.pth.tar": 8.89,
                 "py-feat/img2pose/model.safetensors": 170.0, "py-feat/img2pose/config.json": 0.00236}


def _models(candidate: str) -> dict[str, str]:
    from tasks.pyfeat_weights import DEFAULT_MODELS

    if candidate == DEFAULT:
        return dict(DEFAULT_MODELS)
    role, name = candidate.split("=")
    return dict(DEFAULT_MODELS, **{role: name})


def _registry() -> dict:
    """Generated weights for every candidate, installed in one hub cache (kept between runs)."""
    from tests.pyfeat_fake_weights import build, build_alternatives

    generated = WEIGHTS_DIR / "generated"
    return {**build(WEIGHTS_DIR, "one", cache_dir=generated), **build_alternatives(WEIGHTS_DIR, cache_dir=generated)}


def _pairs(candidate: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(role, model) pairs whose files a candidate brings, and the default set's pairs it replaces."""
    from tasks.pyfeat_weights import DEFAULT_MODELS

    if candidate == DEFAULT:
        return list(DEFAULT_MODELS.items()), []
    role, name = candidate.split("=")
    replaced = [(role, DEFAULT_MODELS[role])] + ([("pose", DEFAULT_MODELS["pose"])] if name == "img2pose" else [])
    return [(role, name)], replaced


def files_mb(pairs: list[tuple[str, str]], registry: dict) -> dict:
    """Hub size and generated size (MB) of these models' files. A file whose hub size is unknown
    counts at its generated size, and the total is marked estimated."""
    from tasks.pyfeat_weights import REGISTRY

    hub, estimated = 0.0, False
    for key in pairs:
        for spec in registry[key]:
            pinned = next((r.size for r in REGISTRY.get(key, ()) if r.filename == spec.filename and r.size), None)
            real = pinned / 1e6 if pinned else HUB_LISTED_MB.get(spec.label)
            if real is None:
                real, estimated = spec.size / 1e6, estimated or not spec.filename.endswith(".json")
            hub += real
    return {"hub_mb": hub, "hub_estimated": estimated,
            "params_mb": sum(spec.size for key in pairs for spec in registry[key]) / 1e6}


def _frames(count: int):
    import numpy as np
    import torch

    from tasks.media import MediaItem, iter_frames

    rgb = [f.rgb for f in iter_frames(MediaItem(feat_data() / VIDEO, "video"), max_frames=count)]
    return torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2)


def run_one(args: argparse.Namespace) -> dict:
    """Load one candidate set, then time `detect` batch by batch until done or out of budget."""
    import feat  # noqa: F401  (py-feat's own import-time thread setting, as a user gets it)

    from tasks.extractors.pyfeat import load_detector

    frames = _frames(args.frames)
    started = time.perf_counter()
    detector = load_detector(WEIGHTS_DIR, _models(args.one), args.threads)
    load_s = time.perf_counter() - started
    detector.detect(frames[:1], data_type="tensor", batch_size=1, progress_bar=False)  # warm-up
    wall0, cpu0 = time.perf_counter(), time.process_time()
    done = faces = 0
    while done < len(frames):
        elapsed = time.perf_counter() - wall0
        if done and elapsed + elapsed / done * min(args.batch, len(frames) - done) > args.budget:
            break
        out = detector.detect(frames[done:done + args.batch], data_type="tensor", batch_size=args.batch,
                              progress_bar=False)
        done += min(args.batch, len(frames) - done)
        faces += int(out["FaceRectX"].notna().sum())
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"frames": done, "faces": faces, "load_s": load_s, "cpu_s_per_frame": cpu / done,
            "wall_s_per_frame": wall / done}


def child(args: argparse.Namespace) -> None:
    try:
        result = run_one(args)
    except Exception as exc:  # a set py-feat cannot run is a finding, reported in the table
        result = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    result["peak_rss_mb"] = self_peak_rss_mb()
    print(json.dumps(result))


def measure(candidate: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--one", candidate, "--frames", str(args.frames), "--batch", str(args.batch),
           "--budget", str(args.budget), "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{candidate} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mb(files: dict) -> str:
    return f"{'~' if files['hub_estimated'] else ''}{files['hub_mb']:.1f}"


def report(runs: list[tuple[str, str, dict]], registry: dict) -> dict:
    """Print the table; every ratio is over the first default run."""
    base = runs[0][2]
    figures = {}
    print(f"  {'candidate':<20}{'hub MB':>8}{'params MB':>10}{'CPU s/fr':>9}{'wall s/fr':>10}{'added':>8}"
          f"{'x CPU':>7}{'RSS MB':>8}{'x RSS':>7}{'frames':>7}{'faces':>6}")
    for label, candidate, r in runs:
        brings, replaces = _pairs(candidate)
        row = dict(r, files=files_mb(brings, registry), replaces=files_mb(replaces, registry))
        size = f"{_mb(row['files']):>8}{row['files']['params_mb']:>10.1f}"
        if "error" in r:
            print(f"  {label:<20}{size}  not usable: {r['error']}")
        else:
            row.update(added_cpu_s_per_frame=r["cpu_s_per_frame"] - base["cpu_s_per_frame"],
                       cpu_ratio=r["cpu_s_per_frame"] / base["cpu_s_per_frame"],
                       peak_rss_ratio=r["peak_rss_mb"] / base["peak_rss_mb"])
            print(f"  {label:<20}{size}{r['cpu_s_per_frame']:>9.3f}{r['wall_s_per_frame']:>10.3f}"
                  f"{row['added_cpu_s_per_frame']:>+8.3f}{row['cpu_ratio']:>7.2f}{r['peak_rss_mb']:>8.0f}"
                  f"{row['peak_rss_ratio']:>7.2f}{r['frames']:>7}{r['faces']:>6}")
        figures[label] = row
    print("  hub MB / params MB: the candidate's own files (default: the whole set); added: its CPU s/frame\n"
          "  minus the default set's; x CPU, x RSS: over the default set (first run)")
    for label, candidate, _ in runs[1:]:
        row = figures[label]
        if candidate != DEFAULT:
            print(f"  {label:<20} {_mb(row['files'])} MB of weights in place of "
                  f"{_mb(row['replaces'])} MB (parameters {row['files']['params_mb']:.1f} MB "
                  f"for {row['replaces']['params_mb']:.1f} MB)")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--budget", type=float, default=20, help="seconds of detect per candidate, at most")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        child(args)
        return
    header("py-feat models per role (bench_pyfeat_models)")
    registry = _registry()
    runs = []
    for candidate in CANDIDATES:
        runs.append((candidate, candidate, measure(candidate, args)))
        print(f"  measured {candidate}", flush=True)
        if "error" in runs[0][2]:
            raise SystemExit(f"the default set failed: {runs[0][2]['error']}")
    runs.append((f"{DEFAULT} (again)", DEFAULT, measure(DEFAULT, args)))
    print(f"{args.frames} frames of {VIDEO} (640x360) through Detectorv1.detect, batch {args.batch}, "
          f"{args.threads} thread(s), generated weights; default = {_models(DEFAULT)}")
    figures = report(runs, registry)
    write_results("pyfeat_models", {"video": VIDEO, "frames": args.frames, "batch": args.batch,
                                    "threads": args.threads, "budget_s": args.budget,
                                    "default_models": _models(DEFAULT), "runs": figures},
                  notes="generated weights; see the module doc for what differs from the real ones")


if __name__ == "__main__":
    os.environ.pop("OMP_NUM_THREADS", None)
    main()
