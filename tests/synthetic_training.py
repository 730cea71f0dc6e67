"""A small synthetic warehouse with a planted signal, for the training tests.

Each video belongs to one of four emotions; its MediaPipe blendshape features are noise plus an
offset on the columns tied to its emotion, so a model that learns anything scores far above
chance, and one that cannot learn fails the tests. Only the blendshape columns are filled (the
others stay null and are dropped by the loader). `sources` adds videos of other extractors (e.g.
OpenFace AU intensities) to the same split: a warehouse that mixes extractors.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from data_contracts import CONTRACT_VERSION, FRAMES, LABELS, VIDEOS, load_emotion_map
from data_contracts.splits import SPLIT_RUNS, SPLITS
from data_contracts.tables import MEDIAPIPE_BLENDSHAPES, blendshape_column
from warehouse import Warehouse
from warehouse.writer import rows_to_table, write_atomic

EMOTIONS = ("angry", "happy", "neutral", "sad")
COLUMNS = [blendshape_column(b) for b in MEDIAPIPE_BLENDSHAPES[:12]]
OPENFACE_COLUMNS = [f"AU{n:02d}_r" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17)]  # 0-5 intensities
MEDIAPIPE_SOURCE = ("mediapipe", tuple(COLUMNS))
OPENFACE_SOURCE = ("openface-csv", tuple(OPENFACE_COLUMNS))
PARTITION_CYCLE = ("pretrain", "ssl", "classifier", "classifier", "classifier", "finetune", "test", "test")
NOW = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _frames(video_id: str, emotion_index: int, n_frames: int, rng: np.random.Generator, signal: float,
            columns: tuple[str, ...] = tuple(COLUMNS)):
    rows = []
    for frame in range(n_frames):
        values = rng.normal(0.5, 0.15, len(columns))
        values[emotion_index::len(EMOTIONS)] += signal
        row = {"source_id": video_id, "video_id": video_id, "frame": frame, "face_id": 0,
               "timestamp": frame / 25, "success": 1, "confidence": 0.99}
        row.update({c: float(v) for c, v in zip(columns, values, strict=True)})
        rows.append(row)
    return rows


def _video(video_id: str, n_frames: int, extractor: str = "mediapipe") -> dict:
    return {"source_id": video_id, "video_id": video_id, "path": f"/data/{video_id}.mp4", "kind": "video",
            "n_frames": n_frames, "n_face_frames": n_frames, "face_rate": 1.0, "extractor": extractor,
            "extractor_version": "test", "extractor_config": "{}", "config_hash": "x",
            "contract_version": CONTRACT_VERSION, "run_id": "r0", "extracted_at": NOW}


def _label(video_id: str, emotion: str, subject_id: str | None = None) -> dict:
    affect = load_emotion_map().defaults(emotion)
    return {"video_id": video_id, "source_id": video_id, "emotion": emotion, "stress": affect.stress,
            "valence": affect.valence, "arousal": affect.arousal, "subject_id": subject_id,
            "label_source": "folder"}


def _split_run(split_id: str, units: int) -> dict:
    row = {"split_id": split_id, "created_at": NOW, "status": "published", "strategy": "grouped",
           "mode": "stable", "group_by": "video", "seed": 0, "params": "{}", "fingerprint": "f",
           "contract_result": "{}", "units": units, "rows": units}
    row.update({f"{p}_rows": 0 for p in ("test", "pretrain", "ssl", "classifier", "finetune")})
    return row


def build_warehouse(home: Path, videos_per_class: int = 16, n_frames: int = 12, signal: float = 0.6,
                    seed: int = 0, split_id: str = "s1", publish: bool = True,
                    sources: tuple[tuple[str, tuple[str, ...]], ...] = (MEDIAPIPE_SOURCE,),
                    subjects: int | None = None) -> Warehouse:
    """Write frames, videos, labels and one grouped split (published unless `publish` is False:
    then it is in `splits` but never the current split); returns the warehouse. Each of `sources`
    (extractor, columns it fills) gives `videos_per_class` videos per emotion. With `subjects`,
    video i of each emotion is subject `p{i % subjects}`'s (posed data: everyone shows everything)."""
    wh = Warehouse(home).init()
    rng = np.random.default_rng(seed)
    splits, frames, videos, labels = [], [], [], []
    for s_index, (extractor, columns) in enumerate(sources):
        for e_index, emotion in enumerate(EMOTIONS):
            for i in range(videos_per_class):
                vid = f"{split_id}-{emotion}{i:03d}" + (f"-{extractor}" if s_index else "")
                frames += _frames(vid, e_index, n_frames, rng, signal, columns)
                videos.append(_video(vid, n_frames, extractor))
                labels.append(_label(vid, emotion, f"p{i % subjects}" if subjects else None))
                partition = PARTITION_CYCLE[i % len(PARTITION_CYCLE)]
                splits.append({"split_id": split_id, "unit_id": vid, "video_id": vid, "partition": partition,
                               "emotion": None if partition == "pretrain" else emotion})
    key = f"synthetic-{split_id}"
    write_atomic(wh.file_for("frames", key), rows_to_table(FRAMES, frames))
    write_atomic(wh.file_for("videos", key), rows_to_table(VIDEOS, videos))
    write_atomic(wh.file_for("labels", key), rows_to_table(LABELS, labels))
    write_atomic(wh.file_for("splits", split_id), rows_to_table(SPLITS, splits))
    if publish:
        write_atomic(wh.file_for("split_runs", split_id),
                     rows_to_table(SPLIT_RUNS, [_split_run(split_id, len(splits))]))
    return wh
