"""py-feat 2.1.5 (`Detectorv1`): face box and score, 68 landmarks, head pose, 20 Action Units and
7 emotion scores per frame and face.

Frames come from `tasks.media.iter_frames` (OpenCV; py-feat's own reader needs FFmpeg libraries)
and go to py-feat as tensors, a chunk of frames at a time; rows leave in `FrameBatchBuilder`
batches, so memory does not grow with video length. A chunk holds at most `PIXEL_BUDGET` pixels
(one frame of 4K video), whatever `batch_size` says.

Weights: `tasks.pyfeat_weights` checks every file of the chosen models against its pinned sha256
before any work (`check_ready`); py-feat is then pointed at affectflow's hub cache and the hub
is switched off for the process (`HF_HUB_OFFLINE`), so nothing is ever fetched during a run.

Speed, each switchable and recorded in `config()`:
- `detect_every=N`: RetinaFace runs on every N-th frame; the frames between reuse its boxes
  (landmarks, AUs, emotions and pose still run on every frame, inside those boxes). Faces that
  appear or leave between detections are picked up at the next one (at most N-1 frames late).
- `detect_max_side`: RetinaFace sees the frame downscaled so its longer side is at most this;
  boxes are scaled back. Landmarks/AUs/emotions always run on full-resolution crops.
- `batch_size`: frames per py-feat call (detection and the per-face models are batched).
- `threads`: torch intra-op threads (py-feat forces OMP_NUM_THREADS=1 when unset).
- `prefetch`: decode the next frames on a thread while the models run.
- Always on (identical output): the HOG features shared by the AU and emotion heads are computed
  once per call instead of twice.
`detect_every=1, detect_max_side=None` reproduces py-feat's own `Detector.detect` output.

Mapping into the contract:
- `x_i, y_i` are py-feat's 68 landmarks in frame pixels; `face_x/y/w/h` and `face_score` are
  py-feat's reported box (`FaceRect*`, the square crop box it derives from RetinaFace's box) and
  its RetinaFace score; `confidence` is that score too.
- Pose: py-feat reports Pitch, Roll, Yaw in degrees with +pitch = up, +yaw = turn to the
  subject's right, +roll = tilt to the subject's right (estimated from the landmarks by its
  pose MLP, distilled from img2pose). OpenFace's R = Rx·Ry·Rz in radians, camera frame x right,
  y down, z forward, has +Rx = looking down, +Ry = turning to the subject's right, +Rz = head
  top towards the image's right (the subject's left). Hence Rx = -pitch, Ry = +yaw,
  Rz = -roll (converted to radians). py-feat gives no translation: `pose_T*` stay null.
- `pf_AU*` are py-feat's per-AU outputs (xgb: probability of activation 0-1; svm: 0/1
  decisions), not OpenFace's 0-5 intensities. `emo_*` are py-feat's emotion outputs (svm, the
  default: each emotion's SVM decision, 0 or 1; resmasknet: softmax probabilities).
- Several faces: `face_id` is stable across frames (`IouTracker`); `num_faces` keeps the
  largest faces of each frame (`num_faces=1`: only the main face).

Default models (`DEFAULT_MODELS`): retinaface, mobilefacenet, xgb, svm, pose_mlp, the lightest set
that gives landmarks, pose, AUs and emotions. `benchmarks/bench_pyfeat_models.py` swaps one role
at a time through raw `Detector.detect` (48 frames of WolfgangLanger, generated weights of the
real shapes, 1 thread; 2026-11-25): the default set costs 0.47 CPU-s per frame and 307 MB of
weights; pfld landmarks 1.01x the time (9 MB instead of 12; accuracy unmeasured without real
weights); svm AUs 0.97x (within noise, but 0/1 decisions instead of xgb's probabilities);
resmasknet emotions 1.98x the time, +492 MB, 1.39x peak RSS (the only emotion model with
probabilities); img2pose for face + pose at least 5.1x (and CC-BY-NC); mobilenet landmarks do not
work with py-feat 2.1.5's HOG heads (224-px crops give 23,328 HOG features, the scalers expect
5,408). The svm emotion model cannot give probabilities: seven one-vs-rest linear SVMs expose
`predict` (and uncalibrated margins), so `emo_*` are 0/1 with it; choose
`emotion_model="resmasknet"` when probabilities are needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from affectflow.settings import load_settings
from tasks.errors import SetupError
from tasks.extractors.base import BATCH_ROWS, ExtractOptions, Extractor, FrameBatchBuilder, ItemMeta
from tasks.extractors.tracking import IouTracker
from tasks.media import Frame, MediaItem, iter_frames
from tasks.pyfeat_weights import (
    DEFAULT_MODELS,
    REGISTRY,
    HubFile,
    check_files,
    hub_dir,
    required_files,
)

MAP_VERSION = "1"
PIXEL_BUDGET = 3840 * 2160  # pixels per chunk of frames: 8 frames of 640x360, one 4K frame
_AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU11", "AU12", "AU14",
        "AU15", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU28", "AU43")
_EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
_LANDMARKS = [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
Box = list[float]  # x1, y1, x2, y2, score (RetinaFace's output format)


def openface_rotation(pitch_deg: float, roll_deg: float, yaw_deg: float) -> tuple[float, float, float]:
    """py-feat (Pitch, Roll, Yaw) in degrees -> OpenFace (Rx, Ry, Rz) in radians (module doc)."""
    rx, ry, rz = -math.radians(pitch_deg), math.radians(yaw_deg), -math.radians(roll_deg)
    return tuple((a + math.pi) % (2 * math.pi) - math.pi for a in (rx, ry, rz))  # type: ignore[return-value]


def row_features(row: Mapping[str, float]) -> dict[str, float]:
    """One py-feat output row (a face) -> contract columns."""
    features = {name: float(row[name]) for name in _LANDMARKS}
    features.update(face_x=row["FaceRectX"], face_y=row["FaceRectY"], face_w=row["FaceRectWidth"],
                    face_h=row["FaceRectHeight"], face_score=row["FaceScore"])
    rx, ry, rz = openface_rotation(row["Pitch"], row["Roll"], row["Yaw"])
    features.update(pose_Rx=rx, pose_Ry=ry, pose_Rz=rz)
    features.update({f"pf_{au}": float(row[au]) for au in _AUS})
    features.update({f"emo_{e}": float(row[e]) for e in _EMOTIONS})
    return features


class _GivenBoxes:
    """Stands in for py-feat's face detector inside `Detectorv1.detect_faces`, returning boxes
    found earlier, so py-feat's own cropping and models run on exactly those faces."""

    def __init__(self, boxes: Sequence[Sequence[Box]]):
        self.boxes = boxes

    def __call__(self, frames: Any) -> list[list[Box]]:
        return [list(b) for b in self.boxes]


@contextlib.contextmanager
def _resources_at(hub: Path) -> Iterator[None]:
    """py-feat passes `cache_dir=get_resource_path()` to every hub look-up; point it at `hub`."""
    import feat.detector
    import feat.utils.io

    saved = feat.utils.io.get_resource_path, feat.detector.get_resource_path
    feat.utils.io.get_resource_path = feat.detector.get_resource_path = lambda: str(hub)
    try:
        yield
    finally:
        feat.utils.io.get_resource_path, feat.detector.get_resource_path = saved


def hub_offline() -> None:
    """No hub traffic from this process: the weights are local and checked."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True


def load_detector(models_dir: Path, models: Mapping[str, str], threads: int | None = None):
    """A py-feat `Detectorv1` loaded from affectflow's hub cache (weights checked beforehand)."""
    import torch
    from feat import Detectorv1
    from feat.utils import face_pose_mlp

    hub_offline()
    if threads:
        torch.set_num_threads(threads)
    # py-feat's RetinaFace constructor switches autograd off for the whole thread; its inference
    # runs under `torch.inference_mode()` anyway, so the caller's grad mode is put back below.
    with torch.set_grad_enabled(torch.is_grad_enabled()), _resources_at(hub_dir(models_dir)), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="face_model='retinaface' does not regress")
        detector = Detectorv1(face_model=models["face"], landmark_model=models["landmark"],
                              au_model=models["au"], emotion_model=models["emotion"],
                              identity_model=None, gaze_model=None, device="cpu")
        face_pose_mlp._CACHE.clear()
        if face_pose_mlp._load_pose_mlp("cpu") is None:
            raise SetupError("py-feat's pose model (py-feat/pose_mlp_v2) could not be loaded")
    return detector


class PyFeatExtractor(Extractor):
    """py-feat `Detectorv1` on videos and still images, with the speed options of the module doc."""

    name = "pyfeat"
    kinds = ("video", "image")
    batch_rows = BATCH_ROWS

    def __init__(self, face_model: str = DEFAULT_MODELS["face"],
                 landmark_model: str = DEFAULT_MODELS["landmark"], au_model: str = DEFAULT_MODELS["au"],
                 emotion_model: str = DEFAULT_MODELS["emotion"], pose_model: str = DEFAULT_MODELS["pose"],
                 num_faces: int = 8, face_threshold: float = 0.5, detect_every: int = 5,
                 detect_max_side: int | None = 320, batch_size: int = 8, threads: int | None = None,
                 prefetch: bool = True, models_dir: Path | None = None,
                 weights: Mapping[tuple[str, str], Sequence[HubFile]] | None = None):
        if not 1 <= int(num_faces) <= 64:
            raise ValueError(f"num_faces must be 1..64, got {num_faces}")
        if int(detect_every) < 1 or int(batch_size) < 1:
            raise ValueError("detect_every and batch_size must be at least 1")
        if detect_max_side is not None and int(detect_max_side) < 64:
            raise ValueError(f"detect_max_side must be at least 64 pixels, got {detect_max_side}")
        self.models = {"face": face_model, "landmark": landmark_model, "au": au_model,
                       "emotion": emotion_model, "pose": pose_model}
        self.num_faces, self.face_threshold = int(num_faces), float(face_threshold)
        self.detect_every, self.batch_size = int(detect_every), int(batch_size)
        self.detect_max_side = None if detect_max_side is None else int(detect_max_side)
        self.threads = threads if threads is not None else (os.cpu_count() or 1)
        self.prefetch = prefetch
        self.models_dir = Path(models_dir) if models_dir is not None else load_settings().models_dir
        self.files = required_files(self.models, weights or REGISTRY)
        self._detector: Any = None
        self._retinaface: Any = None
        self._lock = threading.Lock()  # the detector is swapped in and out around py-feat calls

    @property
    def version(self) -> str:
        import feat

        pins = hashlib.sha256("".join(f.sha256 or f.label for f in self.files).encode()).hexdigest()
        return f"py-feat-{feat.__version__}+weights-{pins[:12]}+map{MAP_VERSION}"

    def config(self) -> dict[str, Any]:
        return {"models": self.models, "num_faces": self.num_faces, "face_threshold": self.face_threshold,
                "detect_every": self.detect_every, "detect_max_side": self.detect_max_side,
                "weights": {f.label: f.sha256 for f in self.files}, "map": MAP_VERSION}

    def check_ready(self) -> None:
        check_files(self.models_dir, self.files)

    def detector(self):
        if self._detector is None:
            self.check_ready()
            self._detector = load_detector(self.models_dir, self.models, self.threads)
            self._retinaface = self._detector.facepose_detector
        return self._detector

    def close(self) -> None:
        self._detector = None

    def extract(self, item: MediaItem, source_id: str, options: ExtractOptions,
                meta: ItemMeta) -> Iterator[pa.RecordBatch]:
        detector = self.detector()
        builder = FrameBatchBuilder(source_id, self.batch_rows)
        tracker = IouTracker()
        frames = iter_frames(item, options.fps, options.max_frames,
                             prefetch=2 * self.batch_size if self.prefetch else 0, tally=meta.extra)
        held: list[list[Box]] = [[]]  # the last detection's boxes, carried across chunks
        position = 0
        for chunk in _chunks(frames, self.batch_size):
            if meta.width is None:
                meta.height, meta.width = chunk[0].rgb.shape[:2]
            boxes = self._boxes(detector, chunk, position, held)
            position += len(chunk)
            for frame, frame_boxes, faces in zip(chunk, boxes, self._run(detector, chunk, boxes), strict=True):
                if builder.n + max(len(faces), 1) > builder.batch_rows:
                    yield from _flushed(builder)
                if not faces:
                    builder.add(source_id, frame.index, 0, frame.timestamp, False, None)
                    continue
                ids = tracker.assign([(b[0], b[1], b[2] - b[0], b[3] - b[1]) for b in frame_boxes])
                for face_id, features in zip(ids, faces, strict=True):
                    builder.add(source_id, frame.index, face_id, frame.timestamp, True,
                                features["face_score"], features)
        yield from _flushed(builder)

    def _boxes(self, detector: Any, chunk: list[Frame], position: int,
               held: list[list[Box]]) -> list[list[Box]]:
        """Each frame's face boxes: detected on every `detect_every`-th frame, held in between."""
        due = [i for i in range(len(chunk)) if (position + i) % self.detect_every == 0]
        found = self._detect(detector, [chunk[i].rgb for i in due]) if due else []
        per_frame, current = [], held[0]
        for i in range(len(chunk)):
            if i in due:
                current = found[due.index(i)]
            per_frame.append(current)
        held[0] = current
        return per_frame

    def _detect(self, detector: Any, images: list[np.ndarray]) -> list[list[Box]]:
        """RetinaFace on (downscaled) frames, in one batch; boxes in full-frame pixels."""
        import torch

        height, width = images[0].shape[:2]
        scale = 1.0
        if self.detect_max_side is not None and max(height, width) > self.detect_max_side:
            scale = self.detect_max_side / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            images = [cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in images]
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
        with self._lock:
            found = self._retinaface(batch)
        return [self._keep([[*(v / scale for v in d[:4]), d[4]] for d in dets]) for dets in found]

    def _keep(self, boxes: list[Box]) -> list[Box]:
        """Boxes at or above the threshold, the `num_faces` largest, largest first."""
        kept = [b for b in boxes if b[4] >= self.face_threshold]
        kept.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
        return kept[:self.num_faces]

    def _run(self, detector: Any, chunk: list[Frame], boxes: list[list[Box]]) -> list[list[dict[str, float]]]:
        """py-feat's cropping and per-face models on the given boxes; features per frame and face."""
        import torch

        frames = torch.from_numpy(np.stack([f.rgb for f in chunk])).permute(0, 3, 1, 2)
        with self._lock:
            detector.facepose_detector = _GivenBoxes(boxes)
            try:
                faces_data = detector.detect_faces(frames, face_size=detector.face_size,
                                                   face_detection_threshold=0.0)
            finally:
                detector.facepose_detector = self._retinaface
            with _hog_once():
                table = detector.forward(faces_data, _batch_data(frames))
        rows = table.to_dict("records")
        out, cursor = [], 0
        for frame_boxes in boxes:
            n = len(frame_boxes)
            out.append([row_features(r) for r in rows[cursor:cursor + n]])
            cursor += max(n, 1)  # py-feat emits one all-NaN row for a frame without faces
        return out


@contextlib.contextmanager
def _hog_once() -> Iterator[None]:
    """py-feat's `forward` computes the same HOG features twice when both the AU and the emotion
    model are HOG-based (xgb/svm + svm); compute them once per call (same inputs, same output)."""
    import feat.detector

    original = feat.detector.extract_hog_features_batched
    memo: dict[tuple[int, int], Any] = {}

    def once(faces: Any, landmarks: Any, hog_layer: Any = None) -> Any:
        key = (id(faces), id(landmarks))
        if key not in memo:
            memo[key] = original(faces, landmarks, hog_layer=hog_layer)
        return memo[key]

    feat.detector.extract_hog_features_batched = once
    try:
        yield
    finally:
        feat.detector.extract_hog_features_batched = original


def _batch_data(frames: Any) -> dict[str, Any]:
    """What py-feat's DataLoader would pass for unpadded, unscaled frames."""
    import torch

    zeros = torch.zeros(frames.shape[0])
    return {"Image": frames, "Scale": torch.ones(frames.shape[0]),
            "Padding": {"Left": zeros, "Top": zeros, "Right": zeros, "Bottom": zeros}}


def _chunks(frames: Iterator[Frame], batch_size: int) -> Iterator[list[Frame]]:
    """Runs of same-sized frames, at most `batch_size` and at most `PIXEL_BUDGET` pixels."""
    chunk: list[Frame] = []
    limit = batch_size
    for frame in frames:
        if chunk and (len(chunk) >= limit or frame.rgb.shape != chunk[0].rgb.shape):
            yield chunk
            chunk = []
        if not chunk:
            height, width = frame.rgb.shape[:2]
            limit = max(1, min(batch_size, PIXEL_BUDGET // (height * width)))
        chunk.append(frame)
    if chunk:
        yield chunk


def _flushed(builder: FrameBatchBuilder) -> Iterator[pa.RecordBatch]:
    batch = builder.flush()
    if batch is not None:
        yield batch
