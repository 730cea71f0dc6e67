"""Model predictions on new media: the `predictions` table.

One row per frame and face (`level` = `frame`) and one per window (`level` = `window`) for each
checkpoint (`run_id`) and video. A frame row is predicted from the window of face frames that
ends on it (`window_start` .. `window_end`, frame indices, at most the checkpoint's window
length); a window row covers consecutive non-overlapping windows, the windows training used.
Frames without a face keep their row with every prediction null: no guess, and the face rate
stays visible.

Layout of the per-emotion probabilities: one JSON object per row, `emotion_probs`
(`{"angry": 0.12, "happy": 0.70, …}`), rather than one column per emotion or one row per
emotion. The emotion set belongs to the checkpoint, not to the contract, so a column per
emotion would change the table's schema with every label map; and a long layout (a row per
emotion) would repeat stress, valence and arousal on every row and break "one row per frame".
The JSON object keeps one fixed schema for every checkpoint and one row per frame, and DuckDB
reads it directly: `emotion_probs->>'happy'`, or `json_keys(emotion_probs)`. The common
questions need no JSON at all: `dominant_emotion` and `dominant_prob` are typed columns. The
CSV files written beside the plots carry one `p_<emotion>` column per emotion instead.
"""

from __future__ import annotations

from data_contracts.columns import Column, Table

LEVELS = ("frame", "window")

PREDICTIONS = Table(
    "predictions",
    (
        Column("run_id", "string", nullable=False, description="training run of the checkpoint used"),
        Column("video_id", "string", nullable=False, description="content hash of the media item"),
        Column("path", "string", nullable=False, description="the media file, when predicted"),
        Column("level", "string", nullable=False, allowed=LEVELS,
               description="frame: one row per frame and face; window: one row per window"),
        Column("frame", "int32", range=(0, None), description="0-based frame index; null on window rows"),
        Column("face_id", "int16", nullable=False, range=(0, None), description="face track id"),
        Column("timestamp", "float64", unit="s", range=(0, None),
               description="time of `frame` (window rows: of `window_start`)"),
        Column("window_start", "int32", range=(0, None), description="first frame of the window used"),
        Column("window_end", "int32", range=(0, None), description="last frame of the window used"),
        Column("emotion_probs", "string",
               description='JSON object {"emotion": probability}, summing to 1; null without a face'),
        Column("dominant_emotion", "string", description="the most probable emotion"),
        Column("dominant_prob", "float32", range=(0, 1), description="its probability"),
        Column("stress_prob", "float32", range=(0, 1), description="probability of stress"),
        Column("valence", "float32", description="predicted valence (label scale 0-3)"),
        Column("arousal", "float32", description="predicted arousal (label scale 0-3)"),
        Column("created_at", "timestamp", nullable=False),
    ),
    key=("run_id", "video_id", "level", "frame", "face_id", "window_start"),
    description="Per-frame and per-window emotion, stress and valence-arousal predictions on new media.",
)
