"""OpenFace-compatible Action Unit estimates from MediaPipe's blendshapes and landmark geometry.

An estimate of OpenFace 2.x's AU intensities (`AU*_r`, 0-5) and presence (`AU*_c`), not OpenFace:
a linear map (ridge regression, clipped to 0-5) from one face's 51 blendshape scores and 11
landmark distances (68-point scheme, roll removed, divided by the distance between the eye
centres) to `est_AU*_r`, and a threshold per AU on that intensity to `est_AU*_c`. Each frame is
estimated on its own, so a still image gets the same estimate as the same frame of a video, and
the estimate is a function of columns stored in the same row (`bs_*`, `x_*`, `y_*`).

OpenFace calibrates its video AU models per person (it subtracts the median appearance over the
video and shifts predictions so the lowest are 0); a per-frame map cannot, so between-person
offsets are the estimate's main error. The coefficients, the data they were fitted on and their
held-out agreement with OpenFace live in `au_estimate.json`, written by
`scripts/fit_au_estimate.py`; AUs whose held-out agreement fell below the file's bound are not
estimated (their columns stay null).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data_contracts.tables import MEDIAPIPE_BLENDSHAPES, blendshape_column, est_au_columns

if TYPE_CHECKING:  # only a type here; pandas costs ~0.9 s of every run's start (a no-op re-run's too)
    import pandas as pd

MAPPING_FILE = Path(str(importlib.resources.files("tasks.extractors"))) / "au_estimate.json"
BLENDSHAPE_INPUTS = tuple(blendshape_column(b) for b in MEDIAPIPE_BLENDSHAPES if b != "_neutral")
# Landmark distances, in eye-centre distances, on points rotated so the eye line is horizontal
# (y down). Each is (name, what it follows, point pairs whose vertical or horizontal gap it averages).
GEOMETRY = (
    ("brow_inner", "inner brow raise (AU1) / lower (AU4)", "y", ((21, 39), (22, 42))),
    ("brow_outer", "outer brow raise (AU2)", "y", ((17, 36), (26, 45))),
    ("brow_gap", "brows drawn together (AU4)", "x", ((21, 22),)),
    ("eye_open", "upper to lower lid (AU5, AU7, AU45)", "y", ((37, 41), (38, 40), (43, 47), (44, 46))),
    ("mouth_width", "lip corners apart (AU12, AU20)", "x", ((48, 54),)),
    ("mouth_open", "inner lips apart (AU25, AU26)", "y", ((62, 66),)),
    ("lip_corner", "lip corners below the lip centre (AU12 up, AU15 down)", "y", ((48, 51), (54, 57))),
    ("nose_lip", "nose base to upper lip (AU9, AU10)", "y", ((33, 51),)),
    ("chin", "lower lip to chin (AU17)", "y", ((57, 8),)),
    ("jaw_drop", "nose base to chin (AU26)", "y", ((33, 8),)),
    ("lips_outer", "outer lip opening; with mouth_open, lip thickness (AU23, AU24)", "y", ((51, 57),)),
)
GEOMETRY_INPUTS = tuple(f"geo_{name}" for name, *_ in GEOMETRY)
INPUTS = BLENDSHAPE_INPUTS + GEOMETRY_INPUTS
_LEFT_EYE, _RIGHT_EYE = slice(36, 42), slice(42, 48)


def _differences() -> tuple[np.ndarray, np.ndarray]:
    """(len(GEOMETRY), 68) weights: row k averages point b minus point a over feature k's pairs;
    and whether each feature is horizontal (True) or vertical."""
    weights = np.zeros((len(GEOMETRY), 68))
    for k, (_, _, _, pairs) in enumerate(GEOMETRY):
        for a, b in pairs:
            weights[k, b] += 1.0 / len(pairs)
            weights[k, a] -= 1.0 / len(pairs)
    return weights, np.array([along == "x" for _, _, along, _ in GEOMETRY])


_DIFFERENCES, _HORIZONTAL = _differences()
_EYES = np.zeros(68)
_EYES[_RIGHT_EYE], _EYES[_LEFT_EYE] = 1.0 / 6, -1.0 / 6  # right eye centre minus left eye centre


def geometry(points: np.ndarray) -> np.ndarray:
    """(n, 68, 2) image points -> (n, len(GEOMETRY)) distances along and across the eye line,
    divided by the eye-centre distance (NaN for a degenerate face whose eye centres coincide).
    Differences of points are rotated, not the points: the same numbers, one matrix product."""
    points = np.asarray(points, dtype=np.float64)
    dx, dy = _DIFFERENCES @ points[..., 0].T, _DIFFERENCES @ points[..., 1].T  # (k, n), image axes
    ax, ay = _EYES @ points[..., 0].T, _EYES @ points[..., 1].T  # eye line (n,)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = 1.0 / (ax * ax + ay * ay)
        along = (dx * ax + dy * ay) * norm
        across = (dy * ax - dx * ay) * norm
    along[~_HORIZONTAL] = across[~_HORIZONTAL]
    return along.T


def input_matrix(frames: pd.DataFrame) -> np.ndarray:
    """The estimate's inputs (`INPUTS` order) from frames rows with `bs_*`, `x_*`, `y_*` columns."""
    points = np.stack([frames[[f"x_{i}" for i in range(68)]].to_numpy(np.float64),
                       frames[[f"y_{i}" for i in range(68)]].to_numpy(np.float64)], axis=-1)
    return np.column_stack([frames[list(BLENDSHAPE_INPUTS)].to_numpy(np.float64), geometry(points)])


@dataclass(frozen=True)
class AuEstimate:
    """A fitted map: for each estimated AU an intercept, one weight per input, a presence threshold."""

    aus: tuple[int, ...]
    intercept: np.ndarray  # (k,)
    weights: np.ndarray  # (len(INPUTS), k)
    thresholds: np.ndarray  # (k,)
    version: str
    sha256: str

    def predict(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, len(INPUTS)) -> intensity (n, k) clipped to 0-5, presence (n, k) 0/1 (NaN in, NaN out)."""
        intensity = np.clip(inputs @ self.weights + self.intercept, 0.0, 5.0)
        presence = (intensity >= self.thresholds).astype(np.float64)
        missing = np.isnan(intensity)
        if missing.any():
            presence[missing] = np.nan
        return intensity, presence

    @functools.cached_property
    def _names(self) -> tuple[list[str], list[str]]:
        return [est_au_columns(a)[0] for a in self.aus], [est_au_columns(a)[1] for a in self.aus]

    def face_columns(self, points: np.ndarray, features: Mapping[str, float]) -> dict[str, float]:
        """The `est_AU*` columns of one face from its (68, 2) points and its `bs_*` columns."""
        inputs = np.empty((1, len(INPUTS)))
        inputs[0, : len(BLENDSHAPE_INPUTS)] = [features.get(c, np.nan) for c in BLENDSHAPE_INPUTS]
        inputs[0, len(BLENDSHAPE_INPUTS):] = geometry(points[None])[0]
        intensity, presence = self.predict(inputs)
        r_names, c_names = self._names
        return dict(zip(r_names + c_names, [*intensity[0].tolist(), *presence[0].tolist()], strict=True))


def from_mapping(mapping: Mapping, sha256: str = "") -> AuEstimate:
    """An `AuEstimate` from the JSON mapping `scripts/fit_au_estimate.py` writes."""
    if list(mapping["inputs"]) != list(INPUTS):
        raise ValueError("AU estimate mapping was fitted on other inputs than this code computes; refit it")
    kept = [au for au in mapping["aus"] if au["kept"]]
    weights = np.array([au["weights"] for au in kept], dtype=np.float64).reshape(len(kept), len(INPUTS))
    return AuEstimate(
        aus=tuple(int(au["au"]) for au in kept),
        intercept=np.array([au["intercept"] for au in kept], dtype=np.float64),
        weights=weights.T.copy(),
        thresholds=np.array([au["threshold"] for au in kept], dtype=np.float64),
        version=str(mapping["version"]), sha256=sha256)


@functools.cache
def load_au_estimate(path: Path = MAPPING_FILE) -> AuEstimate:
    """The shipped mapping (read once per process)."""
    raw = Path(path).read_bytes()
    return from_mapping(json.loads(raw), hashlib.sha256(raw).hexdigest())
