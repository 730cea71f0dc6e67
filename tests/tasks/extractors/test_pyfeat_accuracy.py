"""pyfeat extractor with the REAL py-feat weights: landmarks against OpenFace 2.x on the same
frames, and the speed options against the unoptimised path. Skipped (with that reason) where
`affectflow models pull pyfeat` has not fetched the weights — always the case in CI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from affectflow.settings import load_settings
from data_contracts import FRAMES
from tasks.extractors.base import ExtractOptions, ItemMeta
from tasks.media import MediaItem
from tasks.pyfeat_weights import weights_present

FRAMES_CHECKED = 48
LANDMARKS = [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]


@pytest.fixture(scope="module")
def real_models_dir() -> Path:
    models_dir = load_settings().models_dir
    if not weights_present(models_dir):
        pytest.skip(f"real py-feat weights are not in {models_dir} (run `affectflow models pull pyfeat`)")
    return models_dir


def _points(table: pd.DataFrame) -> np.ndarray:
    """(frames, 68, 2) landmarks, one face per frame."""
    xy = table[LANDMARKS].to_numpy(dtype=np.float64)
    return np.stack([xy[:, :68], xy[:, 68:]], axis=-1)


def _run(models_dir: Path, video: Path, **options) -> pd.DataFrame:
    from tasks.extractors.pyfeat import PyFeatExtractor

    extractor = PyFeatExtractor(models_dir=models_dir, num_faces=1, **options)
    batches = extractor.extract(MediaItem(video, "video"), "src", ExtractOptions(max_frames=FRAMES_CHECKED),
                                ItemMeta())
    return pa.Table.from_batches(list(batches), schema=FRAMES.arrow_schema()).to_pandas()


def _normalised_error(a: np.ndarray, b: np.ndarray, reference: np.ndarray) -> float:
    """Median point distance over the inter-ocular distance (outer eye corners 36, 45)."""
    iod = np.linalg.norm(reference[:, 36] - reference[:, 45], axis=-1)
    return float(np.nanmedian(np.linalg.norm(a - b, axis=-1) / iod[:, None]))


def test_landmarks_agree_with_openface(real_models_dir, feat_data, shared_dir):
    ours = _run(real_models_dir, feat_data / "WolfgangLanger_Pexels.mp4")
    openface = pd.read_csv(shared_dir / "fixtures" / "openface" / "mode_A" / "WolfgangLanger_Pexels.csv",
                           skipinitialspace=True).iloc[:FRAMES_CHECKED]
    assert ours["success"].mean() > 0.95
    reference = _points(openface)
    assert _normalised_error(_points(ours), reference, reference) < 0.08


def test_speed_options_keep_landmarks_within_tolerance(real_models_dir, feat_data):
    video = feat_data / "WolfgangLanger_Pexels.mp4"
    exact = _points(_run(real_models_dir, video, detect_every=1, detect_max_side=None))
    fast = _points(_run(real_models_dir, video))
    assert _normalised_error(fast, exact, exact) < 0.03


def test_no_face_video_has_almost_no_faces(real_models_dir, feat_data):
    table = _run(real_models_dir, feat_data / "no_face.mp4")
    assert table["success"].mean() < 0.1
