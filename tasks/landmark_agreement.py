"""How closely another extractor's landmarks and head pose agree with OpenFace on the same frames.

Landmark error per frame is the median, over the 68 points, of the distance between the two
extractors' points divided by the inter-ocular distance (OpenFace's outer eye corners 36 and
45), the usual normalised mean error (NME) of landmark benchmarks, with a median over points so
that a few jaw points (which OpenFace places on the visible silhouette) do not dominate. Only
frames where both extractors succeed count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

X_COLUMNS = [f"x_{i}" for i in range(68)]
Y_COLUMNS = [f"y_{i}" for i in range(68)]
POSE_R = ("pose_Rx", "pose_Ry", "pose_Rz")
POSE_T = ("pose_Tx", "pose_Ty", "pose_Tz")
OUTER_EYE_CORNERS = (36, 45)


@dataclass(frozen=True)
class Agreement:
    frames: np.ndarray  # 0-based frame indices compared
    nme: np.ndarray  # per frame, in inter-ocular distances
    pose_r_mad: dict[str, float] = field(default_factory=dict)  # radians, mean |ours - OpenFace|
    pose_t_mad: dict[str, float] = field(default_factory=dict)  # millimetres

    @property
    def n(self) -> int:
        return len(self.nme)

    @property
    def median(self) -> float:
        return float(np.median(self.nme)) if self.n else float("nan")

    @property
    def p90(self) -> float:
        return float(np.percentile(self.nme, 90)) if self.n else float("nan")

    def summary(self) -> dict[str, float | int]:
        return {"n": self.n, "median_nme": self.median, "p90_nme": self.p90,
                **{f"mad_{k}": v for k, v in {**self.pose_r_mad, **self.pose_t_mad}.items()}}


def read_openface_csv(path: Path) -> pd.DataFrame:
    """An OpenFace FeatureExtraction CSV with its header spaces stripped and 0-based frames."""
    frame = pd.read_csv(path, skipinitialspace=True)
    frame.columns = [c.strip() for c in frame.columns]
    frame["frame"] = frame["frame"].astype(int) - 1
    return frame


def compare_with_openface(ours: pd.DataFrame | pa.Table, openface_csv: Path,
                          face_id: int | None = None) -> Agreement:
    """Per-frame NME and pose differences between `ours` (frames rows of one video, 0-based
    `frame`) and OpenFace's CSV for the same video.

    OpenFace follows one face; with `face_id` None, each frame compares the face of ours that
    lies closest to it (a track that restarts under a new id still counts)."""
    if isinstance(ours, pa.Table):
        ours = ours.to_pandas()
    mine = ours[ours["success"] == 1]
    if face_id is not None:
        mine = mine[mine["face_id"] == face_id]
    theirs = read_openface_csv(openface_csv)
    theirs = theirs[theirs["success"] == 1]
    both = mine.merge(theirs, on="frame", suffixes=("", "_of")).reset_index(drop=True)
    of_xy = _points(both, "_of")
    iod = np.linalg.norm(of_xy[:, OUTER_EYE_CORNERS[0]] - of_xy[:, OUTER_EYE_CORNERS[1]], axis=1)
    errors = np.linalg.norm(_points(both, "") - of_xy, axis=2) / iod[:, None]
    nme = pd.Series(np.median(errors, axis=1) if len(both) else np.empty(0), index=both.index)
    rows = nme.groupby(both["frame"]).idxmin().to_numpy()  # sorted by frame
    closest = both.loc[rows]
    return Agreement(frames=closest["frame"].to_numpy(), nme=nme.loc[rows].to_numpy(),
                     pose_r_mad=_mad(closest, POSE_R), pose_t_mad=_mad(closest, POSE_T))


def _points(frame: pd.DataFrame, suffix: str) -> np.ndarray:
    xs = frame[[c + suffix for c in X_COLUMNS]].to_numpy(dtype=np.float64)
    ys = frame[[c + suffix for c in Y_COLUMNS]].to_numpy(dtype=np.float64)
    return np.stack([xs, ys], axis=-1)


def _mad(frame: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, float]:
    """Mean absolute difference per column, where both sides have a value."""
    out = {}
    for column in columns:
        if column in frame and column + "_of" in frame:
            diff = (frame[column].astype(float) - frame[column + "_of"].astype(float)).abs()
            out[column] = float(diff.mean()) if diff.notna().any() else float("nan")
    return out
