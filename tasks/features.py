"""A split's per-frame features and labels, from the warehouse to model-ready windows.

`make_windows` is THE preprocessing: training, evaluation and prediction all turn a unit's
frames into normalised windows through it, with statistics fitted on training data only
(`fit_preprocessing`).

Feature columns are chosen per extractor: a model reads one extractor's columns (from the
contract, `feature_columns(extractor)`), kept when the frames of the labelled training units
fill them on at least half the frames and they vary there. A split whose units come from
several extractors is refused unless `extractor` names the one to train on (one model per
extractor); every dropped column is listed with its reason (`ColumnChoice`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from data_contracts import feature_columns
from tasks.errors import SetupError

PARTITIONS = ("pretrain", "ssl", "classifier", "finetune", "test")
TRAIN_PARTITIONS = ("pretrain", "ssl", "classifier", "finetune")
LABELLED_TRAIN_PARTITIONS = ("ssl", "classifier", "finetune")  # pretrain is unlabelled by design
MIN_FILLED = 0.5  # a feature column is used when the labelled training frames fill it at least this often


@dataclass
class Preprocessing:
    """Everything needed to turn raw frames into model input; saved in every checkpoint."""

    columns: list[str]
    mean: np.ndarray
    std: np.ndarray
    window: int

    def to_dict(self) -> dict:
        return {"columns": self.columns, "mean": self.mean.tolist(), "std": self.std.tolist(),
                "window": self.window}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(list(data["columns"]), np.asarray(data["mean"], np.float32),
                   np.asarray(data["std"], np.float32), int(data["window"]))


@dataclass
class Windows:
    x: np.ndarray  # (N, window, F) float32, normalised, missing values 0
    mask: np.ndarray  # (N, window) bool, True on real frames
    unit: np.ndarray  # (N,) int64: index of the window's unit


def column_mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and standard deviation over its finite values (np.nanmean/np.nanstd)
    (float64), 0 for a column with none, and without their RuntimeWarnings for such a column
    (a feature only other units fill; valence never given in the training labels)."""
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    mean = np.divide(np.where(finite, values, 0).sum(axis=0, dtype=np.float64), count,
                     out=np.zeros(values.shape[1]), where=count > 0)
    var = (np.where(finite, values - mean, 0) ** 2).sum(axis=0, dtype=np.float64)
    std = np.sqrt(np.divide(var, count, out=np.zeros(values.shape[1]), where=count > 0))
    return mean, std


def fit_preprocessing(frames: list[np.ndarray], columns: list[str], window: int) -> Preprocessing:
    """Per-column mean and standard deviation over the given (training) frames, NaN ignored."""
    stacked = np.concatenate(frames) if frames else np.zeros((0, len(columns)), np.float32)
    if not len(stacked):
        raise SetupError("no training frames to fit the normalisation on")
    mean, std = (a.astype(np.float32) for a in column_mean_std(stacked))
    std[std < 1e-6] = 1.0
    return Preprocessing(list(columns), mean, std, int(window))


def make_windows(frames: list[np.ndarray], prep: Preprocessing) -> Windows:
    """Normalise each unit's frames (rows in time order, columns `prep.columns`) and cut them
    into consecutive windows of `prep.window` frames, the last one padded."""
    xs, masks, owners = [], [], []
    width = len(prep.columns)
    for index, raw in enumerate(frames):
        values = np.nan_to_num((np.asarray(raw, np.float32) - prep.mean) / prep.std)
        count = max(1, -(-len(values) // prep.window))
        padded = np.zeros((count * prep.window, width), np.float32)
        padded[: len(values)] = values
        valid = np.zeros(count * prep.window, bool)
        valid[: len(values)] = True
        xs.append(padded.reshape(count, prep.window, width))
        masks.append(valid.reshape(count, prep.window))
        owners.append(np.full(count, index, np.int64))
    if not xs:
        return Windows(np.zeros((0, prep.window, width), np.float32),
                       np.zeros((0, prep.window), bool), np.zeros(0, np.int64))
    return Windows(np.concatenate(xs), np.concatenate(masks), np.concatenate(owners))


def unit_means(frames: list[np.ndarray], prep: Preprocessing) -> np.ndarray:
    """Per-unit mean of the normalised features (the logistic-regression baseline's input)."""
    rows = [np.nan_to_num((np.asarray(f, np.float32) - prep.mean) / prep.std).mean(0)
            if len(f) else np.zeros(len(prep.columns), np.float32) for f in frames]
    return np.asarray(rows, np.float32).reshape(len(frames), len(prep.columns))


def resolve_split_id(con: duckdb.DuckDBPyConnection, split_id: str) -> str:
    """`current` -> the latest published split; otherwise check that the split exists."""
    if split_id == "current":
        rows = con.execute("SELECT split_id FROM current_split LIMIT 1").fetchall()
        if not rows:
            raise SetupError("no published split yet; run `affectflow resplit` first")
        return str(rows[0][0])
    if not con.execute("SELECT 1 FROM splits WHERE split_id = ? LIMIT 1", [split_id]).fetchall():
        raise SetupError(f"split {split_id!r} not found; `affectflow splits` lists them")
    return split_id


@dataclass
class PartitionData:
    """The units of one partition: raw frames (time order) and unit labels (None/NaN missing)."""

    units: list[str]
    frames: list[np.ndarray]
    emotion: list[str | None]
    stress: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray

    def __len__(self) -> int:
        return len(self.units)

    @property
    def n_frames(self) -> int:
        return int(sum(len(f) for f in self.frames))


@dataclass
class SplitData:
    split_id: str
    extractors: list[str]
    columns: list[str]
    partitions: dict[str, PartitionData]
    choice: ColumnChoice | None = None
    excluded: dict[str, int] | None = None  # units of other extractors left out, per extractor


def _stage_split(con: duckdb.DuckDBPyConnection, split_id: str) -> None:
    """Temp tables of the split's rows and of the frames that belong to its units."""
    con.execute("CREATE OR REPLACE TEMP TABLE _split AS SELECT * FROM splits WHERE split_id = ?",
                [split_id])
    con.execute("""
        CREATE OR REPLACE TEMP VIEW _unit_frames AS
        SELECT s.unit_id, s.partition, s.emotion AS _label, f.*
        FROM _split s JOIN frames f ON f.video_id = s.video_id
         AND (s.frame IS NULL OR (f.frame = s.frame AND f.face_id = s.face_id))
        WHERE f.success = 1""")


def _keep_extractor(con: duckdb.DuckDBPyConnection, extractor: str) -> None:
    con.execute("DELETE FROM _split WHERE video_id NOT IN (SELECT video_id FROM videos WHERE extractor = ?)",
                [extractor])


def split_extractors(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Units of the staged split per extractor, most first."""
    rows = con.execute("""SELECT v.extractor, count(DISTINCT v.video_id) AS n FROM videos v
        WHERE v.video_id IN (SELECT video_id FROM _split) GROUP BY 1 ORDER BY n DESC, 1""").fetchall()
    if not rows:
        raise SetupError("the split's videos have no rows in `videos`; run build-features first")
    return {str(e): int(n) for e, n in rows}


def choose_extractor(split_id: str, found: dict[str, int], wanted: str | None) -> str:
    """The one extractor a model is trained on: the split's only one, or `wanted` (refused when
    the split has none of its units); several without `wanted` are refused, never mixed."""
    listed = ", ".join(f"{e} ({n} units)" for e, n in found.items())
    if wanted is not None:
        if wanted not in found:
            raise SetupError(f"split {split_id} has no units from extractor {wanted!r}; it has {listed}")
        return wanted
    if len(found) > 1:
        raise SetupError(f"split {split_id} mixes extractors: {listed}; their feature columns differ, so "
                         f"train one model per extractor: --extractor {next(iter(found))}")
    return next(iter(found))


@dataclass
class ColumnChoice:
    """The feature columns of one extractor a model reads, and why the others were dropped."""

    extractor: str
    columns: list[str]
    dropped: dict[str, str]  # column -> reason
    frames: int  # labelled training frames the choice was made on

    def summary(self) -> str:
        reasons: dict[str, list[str]] = {}
        for column, reason in self.dropped.items():
            reasons.setdefault(reason.split(" (")[0], []).append(column)
        why = "; ".join(f"{len(cols)} {reason} (e.g. {', '.join(cols[:3])})" for reason, cols in reasons.items())
        return (f"{len(self.columns)} of {len(self.columns) + len(self.dropped)} {self.extractor} feature columns, "
                f"chosen on {self.frames} labelled training frames" + (f"; dropped {why}" if why else ""))

    def to_dict(self) -> dict:
        return {"extractor": self.extractor, "columns": self.columns, "dropped": self.dropped,
                "frames": self.frames}


def choose_columns(con: duckdb.DuckDBPyConnection, extractor: str) -> ColumnChoice:
    """The extractor's contract feature columns that the labelled training units' frames fill on
    at least `MIN_FILLED` of their frames and that vary there (a constant carries nothing)."""
    candidates = feature_columns(extractor)
    stats = ", ".join(f'count("{c}"), min("{c}"), max("{c}")' for c in candidates)
    parts = ", ".join(f"'{p}'" for p in LABELLED_TRAIN_PARTITIONS)
    row = con.execute(f"""SELECT count(*), {stats} FROM _unit_frames
        WHERE partition IN ({parts}) AND _label IS NOT NULL""").fetchall()[0]
    total = int(row[0])
    if not total:
        raise SetupError("the split's labelled training partitions (ssl, classifier, finetune) have no "
                         "labelled frames with a face")
    kept, dropped = [], {}
    for i, column in enumerate(candidates):
        filled, low, high = row[1 + 3 * i: 4 + 3 * i]
        if filled == 0:
            dropped[column] = "null on every labelled training frame"
        elif filled / total < MIN_FILLED:
            dropped[column] = f"filled on under {MIN_FILLED:.0%} of labelled training frames ({filled}/{total})"
        elif low == high:
            dropped[column] = f"constant on the labelled training frames ({low})"
        else:
            kept.append(column)
    return ColumnChoice(extractor, kept, dropped, total)


def _unit_labels(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute("""
        SELECT s.unit_id, any_value(s.partition) AS partition,
               coalesce(any_value(s.emotion), any_value(l.emotion)) AS emotion,
               avg(l.stress) AS stress, avg(l.valence) AS valence, avg(l.arousal) AS arousal
        FROM _split s LEFT JOIN labels l ON l.video_id = s.video_id
        GROUP BY s.unit_id ORDER BY s.unit_id""").df()


def _unit_frames(con: duckdb.DuckDBPyConnection, columns: list[str]) -> dict[str, np.ndarray]:
    selected = ", ".join(f'"{c}"' for c in columns)
    table = con.execute(f"""SELECT unit_id, {selected} FROM _unit_frames
        ORDER BY unit_id, video_id, face_id, frame""").df()
    values = table[columns].to_numpy(np.float32, na_value=np.nan)
    units = table["unit_id"].to_numpy()
    bounds = np.flatnonzero(units[1:] != units[:-1]) + 1
    starts = np.concatenate([[0], bounds]) if len(units) else np.zeros(0, int)
    ends = np.concatenate([bounds, [len(units)]]) if len(units) else np.zeros(0, int)
    return {str(units[s]): values[s:e] for s, e in zip(starts, ends, strict=True)}


def _partition(labels: pd.DataFrame, frames: dict[str, np.ndarray]) -> PartitionData:
    labels = labels[labels["unit_id"].isin(frames.keys())]
    floats = {k: labels[k].to_numpy(np.float64, na_value=np.nan) for k in ("stress", "valence", "arousal")}
    emotions = [None if pd.isna(e) else str(e) for e in labels["emotion"]]
    units = [str(u) for u in labels["unit_id"]]
    return PartitionData(units, [frames[u] for u in units], emotions, floats["stress"],
                         floats["valence"], floats["arousal"])


def load_split(con: duckdb.DuckDBPyConnection, split_id: str, extractor: str | None = None) -> SplitData:
    """Every unit of a split from one extractor (`choose_extractor`) with its face frames
    (success = 1) and labels, on the columns `choose_columns` keeps; units without a single face
    frame are left out."""
    split_id = resolve_split_id(con, split_id)
    _stage_split(con, split_id)
    found = split_extractors(con)
    chosen = choose_extractor(split_id, found, extractor)
    if len(found) > 1:
        _keep_extractor(con, chosen)
    choice = choose_columns(con, chosen)
    if not choice.columns:
        raise SetupError(f"split {split_id}: no {chosen} feature column is filled on the labelled training "
                         f"frames ({choice.summary()})")
    frames = _unit_frames(con, choice.columns)
    labels = _unit_labels(con)
    parts = {p: _partition(labels[labels["partition"] == p], frames) for p in PARTITIONS}
    excluded = {e: n for e, n in found.items() if e != chosen}
    return SplitData(split_id, [chosen], choice.columns, parts, choice, excluded)


def save_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    tmp.replace(path)
    return path
