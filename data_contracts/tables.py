"""The warehouse tables of affectflow, column by column.

Conventions stated once, here:
- Landmarks `x_i`, `y_i` are image pixels (origin top-left, x right, y down), the 68-point
  OpenFace / dlib / iBUG-300W scheme (0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth).
- Head pose follows OpenFace 2.x: translation `pose_T*` in millimetres in the camera frame
  (x right, y down, z forward), rotation `pose_R*` in radians as Euler angles with
  R = Rx·Ry·Rz (pitch, yaw, roll); a face looking straight at the camera is near (0, 0, 0).
  MediaPipe's facial transformation matrix (centimetres, y up, z towards the viewer) and
  py-feat's pose (degrees, pitch/roll/yaw) are converted into this convention by their extractors.
- OpenFace Action Units: `AU*_r` is intensity on OpenFace's 0-5 scale, `AU*_c` is presence 0/1.
  `est_AU*_r` / `est_AU*_c` are the same quantities *estimated* from MediaPipe's blendshapes and
  landmarks by a small map fitted against real OpenFace output (tasks/extractors/au_estimate.py):
  an estimate of OpenFace, not OpenFace, in their own columns. Only the AUs in `EST_AUS` (those
  whose held-out agreement with OpenFace passed the mapping's bound) are filled; the others stay
  null. The mapping is versioned with this contract.
  py-feat's AU outputs are per-AU probabilities of activation in 0-1; they are a different
  quantity and live in their own `pf_AU*` columns rather than being renamed into OpenFace's.
- SQL names are case-insensitive, so OpenFace's 3D landmarks `X_i, Y_i, Z_i` (which would clash
  with the 2D `x_i, y_i`) are `X3d_i, Y3d_i, Z3d_i` here, and `eye_lmk_X_i` is `eye_lmk_X3d_i`;
  `openface_name()` maps an OpenFace CSV header to the contract's name.
- Columns an extractor cannot fill are null, never zero. Rows with no face (`success` 0) have
  every feature null.
"""

from __future__ import annotations

import functools
import math
import re

from data_contracts.columns import Column, Table

CONTRACT_VERSION = "1.2.0"  # 1.1.0: est_AU* columns, the `openface` extractor; 1.2.0: shards, duplicates, partial videos

MEDIAPIPE = "mediapipe"
OPENFACE = "openface-csv"
OPENFACE_RUN = "openface"  # runs FeatureExtraction, then imports its CSV like openface-csv
PYFEAT = "pyfeat"
EXTRACTORS = (MEDIAPIPE, OPENFACE, OPENFACE_RUN, PYFEAT)
ALL = EXTRACTORS
OPENFACE_OUTPUT = (OPENFACE, OPENFACE_RUN)  # the columns OpenFace's own output fills

PI = math.pi
OPENFACE_AUS_R = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
OPENFACE_AUS_C = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 28, 45)
# AUs the shipped estimate fills (tasks/extractors/au_estimate.json, `kept`); the others' est_
# columns stay null. A refit that changes this set changes the contract: bump CONTRACT_VERSION.
EST_AUS = (1, 6, 10, 12, 14, 25, 45)
PYFEAT_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 17, 20, 23, 24, 25, 26, 28, 43)
PYFEAT_EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
MEDIAPIPE_BLENDSHAPES = ["_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight"]


@functools.cache  # called for every blendshape of every frame
def blendshape_column(mediapipe_name: str) -> str:
    """`mouthSmileLeft` -> `bs_mouth_smile_left` (SQL-friendly snake case)."""
    return "bs_" + re.sub(r"(?<!^)(?=[A-Z])", "_", mediapipe_name.strip("_")).lower()


def est_au_columns(au: int) -> tuple[str, str]:
    """The estimated intensity and presence columns of one AU (`est_AU12_r`, `est_AU12_c`)."""
    return f"est_AU{au:02d}_r", f"est_AU{au:02d}_c"


def _series(prefix: str, n: int, **kw: object) -> list[Column]:
    return [Column(f"{prefix}{i}", **kw) for i in range(n)]  # type: ignore[arg-type]


def _feature(name: str, unit: str, by: tuple[str, ...], rng=None, allowed=None, group="", desc=""):
    return Column(name, "float32", unit=unit, range=rng, allowed=allowed, extractors=by,
                  feature=True, group=group, description=desc)


def _frame_columns() -> list[Column]:
    cols = [
        Column("source_id", "string", nullable=False, extractors=ALL, group="key",
               description="content hash of the source file (the Parquet partition)"),
        Column("video_id", "string", nullable=False, extractors=ALL, group="key",
               description="content hash of the media item; for an OpenFace CSV of images, one per image"),
        Column("frame", "int32", nullable=False, range=(0, None), extractors=ALL, group="key",
               description="0-based frame index in the item"),
        Column("face_id", "int16", nullable=False, range=(0, None), extractors=ALL, group="key",
               description="face track id, stable across frames"),
        Column("timestamp", "float64", unit="s", nullable=False, range=(0, None), extractors=ALL,
               group="key", description="presentation time from the decoder"),
        Column("success", "int8", nullable=False, allowed=(0, 1), extractors=ALL, group="key",
               description="1 when a face was found and tracked on this frame"),
        Column("confidence", "float32", range=(0, 1), extractors=ALL, group="key",
               description="extractor's confidence in the face on this frame"),
    ]
    box = (MEDIAPIPE, PYFEAT)
    cols += [_feature(n, "px", box, group="face_box") for n in ("face_x", "face_y", "face_w", "face_h")]
    cols.append(Column("face_score", "float32", range=(0, 1), extractors=(PYFEAT,), group="face_box",
                       description="face detector score"))
    gaze = [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"]
    cols += [_feature(n, "unit vector", OPENFACE_OUTPUT, (-1, 1), group="gaze") for n in gaze]
    cols += [_feature(f"gaze_angle_{a}", "rad", OPENFACE_OUTPUT, (-PI, PI), group="gaze") for a in "xy"]
    for axis in ("x", "y"):
        cols += [_feature(f"eye_lmk_{axis}_{i}", "px", OPENFACE_OUTPUT, group="eye_landmarks") for i in range(56)]
    for axis in ("X", "Y", "Z"):
        cols += [_feature(f"eye_lmk_{axis}3d_{i}", "mm", OPENFACE_OUTPUT, group="eye_landmarks_3d") for i in range(56)]
    pose_by = (*OPENFACE_OUTPUT, MEDIAPIPE, PYFEAT)
    cols += [_feature(f"pose_T{a}", "mm", (*OPENFACE_OUTPUT, MEDIAPIPE), group="pose") for a in "xyz"]
    cols += [_feature(f"pose_R{a}", "rad", pose_by, (-PI, PI), group="pose") for a in "xyz"]
    for axis in ("x", "y"):
        cols += [_feature(f"{axis}_{i}", "px", ALL, group="landmarks") for i in range(68)]
    for axis in ("X", "Y", "Z"):
        cols += [_feature(f"{axis}3d_{i}", "mm", OPENFACE_OUTPUT, group="landmarks_3d") for i in range(68)]
    cols += [_feature(n, "", OPENFACE_OUTPUT, group="shape_params")
             for n in ("p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty")]
    cols += [_feature(f"p_{i}", "", OPENFACE_OUTPUT, group="shape_params") for i in range(34)]
    cols += [_feature(f"AU{a:02d}_r", "intensity 0-5", OPENFACE_OUTPUT, (0, 5), group="au_intensity")
             for a in OPENFACE_AUS_R]
    cols += [_feature(f"AU{a:02d}_c", "presence", OPENFACE_OUTPUT, allowed=(0.0, 1.0), group="au_presence")
             for a in OPENFACE_AUS_C]
    cols += _estimate_columns()
    cols += [_feature(blendshape_column(b), "score 0-1", (MEDIAPIPE,), (0, 1), group="blendshapes")
             for b in MEDIAPIPE_BLENDSHAPES]
    cols += [_feature(f"pf_AU{a:02d}", "probability", (PYFEAT,), (0, 1), group="pyfeat_au")
             for a in PYFEAT_AUS]
    cols += [_feature(f"emo_{e}", "probability", (PYFEAT,), (0, 1), group="emotion")
             for e in PYFEAT_EMOTIONS]
    return cols


def _estimate_columns() -> list[Column]:
    cols = []
    for a in OPENFACE_AUS_R:
        by = (MEDIAPIPE,) if a in EST_AUS else ()
        note = "" if by else "; not estimated (held-out agreement below the mapping's bound): null"
        r_name, c_name = est_au_columns(a)
        cols.append(_feature(r_name, "intensity 0-5", by, (0, 5), group="au_estimate",
                             desc=f"estimate of OpenFace's AU{a:02d}_r from blendshapes and landmarks{note}"))
        cols.append(_feature(c_name, "presence", by, allowed=(0.0, 1.0), group="au_estimate_presence",
                             desc=f"estimate of OpenFace's AU{a:02d}_c (thresholded est_AU{a:02d}_r){note}"))
    return cols


FRAMES = Table(
    "frames",
    tuple(_frame_columns()),
    key=("video_id", "frame", "face_id"),
    description="One row per frame and face: landmarks, pose, gaze, Action Units, emotion scores.",
)

VIDEOS = Table(
    "videos",
    (
        Column("source_id", "string", nullable=False, description="content hash of the source file"),
        Column("video_id", "string", nullable=False, description="content hash of the item"),
        Column("path", "string", nullable=False, description="absolute path when extracted"),
        Column("kind", "string", nullable=False, allowed=("video", "image", "openface-image", "openface-video")),
        Column("n_frames", "int32", nullable=False, range=(0, None)),
        Column("n_face_frames", "int32", nullable=False, range=(0, None)),
        Column("face_rate", "float32", range=(0, 1)),
        Column("width", "int32", unit="px"),
        Column("height", "int32", unit="px"),
        Column("fps", "float32", unit="1/s"),
        Column("duration_s", "float64", unit="s"),
        Column("bytes", "int64", unit="B"),
        Column("mtime_ns", "int64", unit="ns", description="the file's modification time when extracted; with "
               "`bytes` it lets a re-run skip an unchanged file without reading it"),
        Column("partial", "bool", description="true when the decoder stopped well before the container's "
               "frame count (a damaged file): the frames are what could be decoded; `note` says how many"),
        Column("note", "string", description="why the item is partial, in words"),
        Column("extractor", "string", nullable=False, allowed=EXTRACTORS),
        Column("extractor_version", "string", nullable=False),
        Column("extractor_config", "string", nullable=False, description="JSON"),
        Column("config_hash", "string", nullable=False),
        Column("contract_version", "string", nullable=False),
        Column("run_id", "string", nullable=False),
        Column("extracted_at", "timestamp", nullable=False),
    ),
    key=("video_id",),
    description="One row per media item that loaded: one distinct content (video_id is its content hash). "
    "`path` is the file it was loaded from; other files with the same bytes are in `duplicates`.",
)

DUPLICATES = Table(
    "duplicates",
    (
        Column("item_id", "string", nullable=False, description="hash of the path"),
        Column("path", "string", nullable=False, description="a file whose bytes equal an item already loaded"),
        Column("source_id", "string", nullable=False, description="content hash it shares"),
        Column("same_as", "string", nullable=False, description="the path the content is loaded from (videos.path)"),
        Column("bytes", "int64", unit="B"),
        Column("mtime_ns", "int64", unit="ns", description="with `bytes`: unchanged files are not read again"),
        Column("label_conflict", "string", description="set when this file's label differs from the loaded copy's"),
        Column("run_id", "string", nullable=False),
        Column("seen_at", "timestamp", nullable=False),
    ),
    key=("item_id",),
    description="Files with the same bytes as a loaded item: linked to it, not loaded twice. The loaded copy "
    "is the first path in sort order; its labels are the item's.",
)

LABELS = Table(
    "labels",
    (
        Column("video_id", "string", nullable=False),
        Column("source_id", "string", nullable=False),
        Column("emotion", "string", description="canonical emotion (see data_contracts/emotions.csv)"),
        Column("stress", "int8", allowed=(0, 1)),
        Column("valence", "float32", range=(0, 3)),
        Column("arousal", "float32", range=(0, 3)),
        Column("subject_id", "string"),
        Column("label_source", "string", nullable=False,
               allowed=("folder", "filename", "ravdess", "manifest", "none")),
    ),
    key=("video_id",),
    description="Labels per item; stress and valence/arousal default from emotion.",
)

QUARANTINE = Table(
    "quarantine",
    (
        Column("item_id", "string", nullable=False, description="hash of the path"),
        Column("path", "string", nullable=False),
        Column("source_id", "string"),
        Column("stage", "string", nullable=False,
               allowed=("discover", "label", "extract", "validate", "load", "failed")),
        Column("reason", "string", nullable=False),
        Column("bytes", "int64", unit="B", description="file size when quarantined"),
        Column("mtime_ns", "int64", unit="ns", description="modification time when quarantined (an unchanged "
               "bad file is not retried with the same settings)"),
        Column("cache_key", "string", description="extractor config and contract version it failed with"),
        Column("copy_path", "string", description="copy of the bad file, when it could be read"),
        Column("run_id", "string", nullable=False),
        Column("quarantined_at", "timestamp", nullable=False),
    ),
    key=("item_id",),
    description="Items that could not be loaded, with the reason; cleared when the item later loads.",
)

RUNS = Table(
    "runs",
    (
        Column("run_id", "string", nullable=False),
        Column("flow", "string", nullable=False),
        Column("status", "string", nullable=False, allowed=("completed", "failed", "crashed")),
        Column("started_at", "timestamp", nullable=False),
        Column("finished_at", "timestamp", nullable=False),
        Column("params", "string", nullable=False, description="JSON"),
        Column("extractor", "string"),
        Column("items", "int32", nullable=False),
        Column("loaded", "int32", nullable=False),
        Column("skipped", "int32", nullable=False),
        Column("quarantined", "int32", nullable=False),
        Column("failed", "int32", description="items that still failed after their retries"),
        Column("duplicates", "int32", description="files linked to an item with the same bytes"),
        Column("frames", "int64", nullable=False),
        Column("face_rate", "float32"),
        Column("frames_per_s", "float32"),
    ),
    key=("run_id",),
    description="One row per build-features run.",
)

TABLES = {t.name: t for t in (FRAMES, VIDEOS, LABELS, DUPLICATES, QUARANTINE, RUNS)}


_OPENFACE_3D = re.compile(r"^(eye_lmk_)?([XYZ])_(\d+)$")


def openface_name(header: str) -> str:
    """The contract column for an OpenFace CSV header (`X_5` -> `X3d_5`, others unchanged)."""
    match = _OPENFACE_3D.match(header)
    return f"{match.group(1) or ''}{match.group(2)}3d_{match.group(3)}" if match else header


def feature_columns(extractor: str) -> list[str]:
    """The model input features an extractor fills, in contract order."""
    if extractor not in EXTRACTORS:
        raise ValueError(f"unknown extractor {extractor!r}; known: {', '.join(EXTRACTORS)}")
    return [c.name for c in FRAMES.columns if c.feature and extractor in c.extractors]
