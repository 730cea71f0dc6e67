"""Landmark and pose agreement between MediaPipe and OpenFace on the same real video.

Measured here (benchmarks/landmark_agreement.py), MediaPipe vs OpenFace on
WolfgangLanger_Pexels.mp4: median NME 0.027, p90 0.044 over 471 frames; with the map
mirrored left/right the median is 0.57. The bounds below sit between the two.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from data_contracts import FRAMES
from tasks.extractors.base import ExtractOptions, ItemMeta
from tasks.extractors.mediapipe import DLIB68_MIRROR, MediaPipeExtractor
from tasks.landmark_agreement import compare_with_openface, read_openface_csv
from tasks.media import MediaItem

MEDIAN_NME_BOUND = 0.05
P90_NME_BOUND = 0.08


@pytest.fixture(scope="module")
def openface_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "openface" / "mode_A"


def _extract(models_dir: Path, video: Path) -> pd.DataFrame:
    extractor = MediaPipeExtractor(models_dir=models_dir, offline=True)
    batches = extractor.extract(MediaItem(video, "video"), "src", ExtractOptions(), ItemMeta())
    return pa.Table.from_batches(list(batches), schema=FRAMES.arrow_schema()).to_pandas()


@pytest.fixture(scope="module")
def wolfgang(mediapipe_models_dir: Path, feat_data: Path) -> pd.DataFrame:
    return _extract(mediapipe_models_dir, feat_data / "WolfgangLanger_Pexels.mp4")


def _mirrored(frames: pd.DataFrame) -> pd.DataFrame:
    """The same rows as if the map had been written left/right swapped."""
    out = frames.copy()
    for axis in "xy":
        out[[f"{axis}_{i}" for i in range(68)]] = frames[[f"{axis}_{DLIB68_MIRROR[i]}" for i in range(68)]].to_numpy()
    return out


def test_mediapipe_landmarks_agree_with_openface(wolfgang, openface_dir):
    agreement = compare_with_openface(wolfgang, openface_dir / "WolfgangLanger_Pexels.csv")
    assert agreement.n >= 460  # both succeed on (nearly) every one of the 472 frames
    assert agreement.median < MEDIAN_NME_BOUND and agreement.p90 < P90_NME_BOUND


def test_a_left_right_swapped_map_fails_the_bound(wolfgang, openface_dir):
    agreement = compare_with_openface(_mirrored(wolfgang), openface_dir / "WolfgangLanger_Pexels.csv")
    assert agreement.median > MEDIAN_NME_BOUND * 4


def test_head_pose_follows_openface(wolfgang, openface_dir):
    """Same signs and axes as OpenFace: the head turns in this video, and yaw and roll track
    OpenFace's closely; a flipped axis would correlate negatively."""
    openface = read_openface_csv(openface_dir / "WolfgangLanger_Pexels.csv")
    both = wolfgang.merge(openface, on="frame", suffixes=("", "_of"))
    both = both[(both["success"] == 1) & (both["success_of"] == 1)]
    for axis in ("pose_Ry", "pose_Rz"):
        assert np.corrcoef(both[axis], both[f"{axis}_of"])[0, 1] > 0.8, axis
    agreement = compare_with_openface(wolfgang, openface_dir / "WolfgangLanger_Pexels.csv")
    assert max(agreement.pose_r_mad.values()) < 0.25  # radians


def test_openface_against_itself_is_zero_and_an_offset_is_measured(openface_dir):
    csv = openface_dir / "single_face.csv"
    frames = read_openface_csv(csv)
    assert frames["frame"].iloc[0] == 0 and "confidence" in frames.columns
    same = compare_with_openface(frames, csv)
    assert same.n == 72 and same.median == 0 and all(v == 0 for v in same.pose_r_mad.values())
    iod = np.hypot(frames["x_36"] - frames["x_45"], frames["y_36"] - frames["y_45"])
    shifted = frames.copy()
    shifted[[f"x_{i}" for i in range(68)]] = shifted[[f"x_{i}" for i in range(68)]].add(0.1 * iod, axis=0)
    assert compare_with_openface(pa.Table.from_pandas(shifted), csv).median == pytest.approx(0.1)


def test_only_frames_where_both_succeed_count(openface_dir):
    ours = read_openface_csv(openface_dir / "single_face.csv")
    assert compare_with_openface(ours, openface_dir / "no_face.csv").n == 0
    ours.loc[ours["frame"] < 10, "success"] = 0
    assert compare_with_openface(ours, openface_dir / "single_face.csv").n == 62


def test_each_frame_compares_our_face_closest_to_openfaces(openface_dir):
    """A track that restarts under a new id, and a second face elsewhere, do not spoil it."""
    csv = openface_dir / "single_face.csv"
    ours = read_openface_csv(csv)
    ours.loc[ours["frame"] >= 36, "face_id"] = 1
    stranger = ours.copy()
    stranger["face_id"] = 2
    stranger[[f"x_{i}" for i in range(68)]] += 200.0
    agreement = compare_with_openface(pd.concat([stranger, ours]), csv)
    assert agreement.n == 72 and agreement.median == 0
    assert compare_with_openface(ours, csv, face_id=0).n == 36
