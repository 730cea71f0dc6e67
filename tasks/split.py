"""Pure split logic: which partition each unit goes to. No I/O; `tasks/publish_split.py` reads the
units from the warehouse and writes the version.

Two strategies:
- `grouped`: the assigned entity is a video, or a subject (all of a person's videos/images on one
  side; the unit trained and scored stays the video or image); a stratified test holdout is carved
  first, then pretrain of the rest, then ssl / classifier / finetune of the labelled remainder.
  Videos are stratified by emotion, each class apportioned on its own (largest remainder);
  subjects, who usually show several emotions, are apportioned as one stratum. Entities are taken
  in the order of a hash of (id, seed), so the result does not depend on the order rows were read in.
- `row`: every imported row (frame) is a unit. A stratified test holdout of whole videos is carved
  first (so no video has frames on both sides; for images, a row is a video); the remaining rows
  go through the research procedure exactly: `sklearn.utils.shuffle` per class over every row in
  source order (rows without a face included, as the research code reads them), `int(pretrain * n)`
  to pretrain, the labelled parts concatenated in `class_order`, then two stratified
  `train_test_split` calls. With test fraction 0 it is the research code's split, row for row.

Two modes for an existing version (grouped): `stable` keeps every earlier assignment and fills
each class's shortfall per partition with the new units in hash order; `reshuffle` keeps only the
test holdout. The row strategy is the research code, which has no incremental form: it is
recomputed from the seed, so it is deterministic for the same data and seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.model_selection import train_test_split
from sklearn.utils import shuffle

from data_contracts.splits import PARTITIONS, Stages

DEFAULT_CLASS_ORDER = ("angry", "sad", "happy", "neutral")
STRATEGIES = ("grouped", "row")
MODES = ("stable", "reshuffle")


class SplitError(Exception):
    """The units cannot be split (no labelled units, one class only, …); one line for users."""


@dataclass(frozen=True)
class SplitSpec:
    """What defines a split version (together with the data's fingerprint)."""

    strategy: str = "grouped"
    seed: int = 42
    stages: Stages = field(default_factory=Stages)
    group_by: str = "video"  # grouped: video | subject
    class_order: tuple[str, ...] = DEFAULT_CLASS_ORDER

    def params(self) -> dict:
        return {"strategy": self.strategy, "seed": self.seed, "group_by": self.group_key,
                "fractions": asdict(self.stages), "class_order": list(self.class_order)}

    @property
    def group_key(self) -> str:
        return "row" if self.strategy == "row" else self.group_by


@dataclass
class Assignment:
    """unit_id, label, partition per unit; the classes sent to pretrain for being too small."""

    units: pd.DataFrame
    small_classes: dict[str, int]
    min_class_units: int


def unit_hash(unit_ids: pd.Series, seed: int) -> np.ndarray:
    """A 64-bit hash of each unit id keyed by the seed (SipHash, vectorised by pandas)."""
    key = f"{seed:016d}"[-16:]
    ids = pd.Series(unit_ids, copy=False).astype(str)
    return pd.util.hash_pandas_object(ids, index=False, hash_key=key).to_numpy()


def fingerprint(frame: pd.DataFrame) -> str:
    """Order-independent hash of a frame's rows (sum and xor of row hashes, plus the columns)."""
    h = pd.util.hash_pandas_object(frame.astype(object), index=False).to_numpy()
    digest = hashlib.sha256()
    digest.update(",".join(frame.columns).encode())
    digest.update(np.array([len(h), h.sum(dtype=np.uint64), np.bitwise_xor.reduce(h) if len(h) else 0],
                           dtype=np.uint64).tobytes())
    return digest.hexdigest()[:16]


def apportion(totals: ArrayLike, weights: ArrayLike) -> np.ndarray:
    """Split each total into integers proportional to its row of weights (largest remainder;
    ties go to the earlier column). Every part is within one of its exact share."""
    totals = np.asarray(totals, dtype=np.int64)
    weights = np.broadcast_to(np.asarray(weights, dtype=float), (len(totals), np.shape(weights)[-1]))
    sums = weights.sum(axis=1, keepdims=True)
    exact = totals[:, None] * np.divide(weights, sums, out=np.zeros_like(weights), where=sums > 0)
    base = np.floor(exact + 1e-9).astype(np.int64)
    left = totals - base.sum(axis=1)
    order = np.argsort(-(exact - base), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(order.shape[1])[None, :].repeat(len(order), 0), axis=1)
    return base + (ranks < left[:, None])


def stage_targets(n: np.ndarray, stages: Stages) -> np.ndarray:
    """Integer unit counts per class (rows) and partition (PARTITIONS order), stage by stage."""
    test = apportion(n, [stages.test, 1 - stages.test])[:, 0]
    pretrain = apportion(n - test, [stages.pretrain, 1 - stages.pretrain])[:, 0]
    labelled = apportion(n - test - pretrain, [stages.ssl, stages.classifier, stages.finetune])
    return np.column_stack([test, pretrain, labelled])


def min_class_units(spec: SplitSpec) -> int:
    """The fewest units a class needs to be stratified; smaller classes go to pretrain, reported.

    grouped: one unit per partition. row: enough labelled rows that both stratified
    train_test_split calls are valid for any mix of classes (each class keeps >= 2 rows per
    split, each split side gets >= one row per class)."""
    s = spec.stages
    if spec.strategy == "grouped":
        return sum(1 for f in (s.test, s.pretrain, s.ssl, s.classifier, s.finetune) if f > 0)
    t_a, t_b = _row_test_sizes(s)
    need_rest = max(2.0, 1 / t_b, 1 / (1 - t_b))
    need_labelled = max(2.0, 1 / t_a, 1 / (1 - t_a))
    m = next(m for m in range(2, 1_000_000)
             if m >= need_labelled and np.ceil(t_a * m - 1 - 1e-9) >= need_rest)
    # the labelled rows of a class with n rows are n - int(pretrain * n), non-decreasing in n
    return next(n for n in range(m, 100 * m) if n - int(s.pretrain * n) >= m)


def _row_test_sizes(s: Stages) -> tuple[float, float]:
    # the research wrote these test sizes with four decimals (0.30, 0.3333)
    return round(1 - s.ssl, 4), round(s.finetune / (s.classifier + s.finetune), 4)


def _small_classes(labels: pd.Series, minimum: int) -> dict[str, int]:
    sizes = labels.value_counts()
    return {str(c): int(n) for c, n in sizes[sizes < minimum].items()}


def _check_classes(labels: pd.Series, small: dict[str, int], minimum: int, strata: int = 2) -> list[str]:
    present = sorted(set(labels.dropna().unique()) - set(small))
    if labels.notna().sum() == 0:
        raise SplitError("no labelled units: every unit lacks an emotion, nothing to stratify")
    if strata == 1 and not present:
        raise SplitError(f"only {int(labels.notna().sum())} labelled groups; a grouped split needs at least "
                         f"{minimum} (one per partition): group by video, or set a partition's fraction to 0")
    if len(present) < strata:
        raise SplitError(
            f"only {len(present)} emotion class with at least {minimum} units ({', '.join(present) or 'none'}); "
            f"a split needs two or more (too small: {small or 'none'})")
    return present


def stratified_before(previous: pd.DataFrame, minimum: int) -> pd.DataFrame:
    """The units of an earlier version that were stratified: labelled, of a class that was not
    too small then (the others sat in pretrain only for lack of a class to stratify)."""
    prev = previous.drop_duplicates("unit_id")
    sizes = prev["label"].value_counts()
    return prev[prev["label"].isin(list(sizes[sizes >= minimum].index))]


def _carried(units: pd.DataFrame, previous: pd.DataFrame | None, mode: str, minimum: int) -> pd.Series:
    """The earlier partition of each unit that keeps it: in `stable` mode every stratified unit
    whose label is unchanged, in both modes every unit of the test holdout."""
    if previous is None or previous.empty:
        return pd.Series(None, index=units.index, dtype=object)
    prev = stratified_before(previous, minimum).set_index("unit_id")
    part = units["unit_id"].map(prev["partition"])
    in_test = part.eq("test").fillna(False).astype(bool)
    same = units["unit_id"].map(prev["label"]).eq(units["label"]).fillna(False).astype(bool)
    keep = in_test if mode == "reshuffle" else in_test | same
    return part.astype(object).where(keep, None)


def _fill(free: pd.DataFrame, kept: pd.DataFrame, spec: SplitSpec) -> np.ndarray:
    """Partitions for the free units: per class, the shortfall of each partition against the
    class's targets (over kept + free units), taken in hash order."""
    classes = pd.Index(sorted(free["label"].unique()))
    fixed = (pd.crosstab(kept["label"], kept["partition"])
             .reindex(index=classes, columns=list(PARTITIONS), fill_value=0).to_numpy())
    k = free["label"].value_counts().reindex(classes).to_numpy()
    targets = stage_targets(k + fixed.sum(axis=1), spec.stages)
    deficit = np.clip(targets - fixed, 0, None)
    weights = np.where(deficit.sum(axis=1, keepdims=True) > 0, deficit, targets)
    counts = np.where((deficit.sum(axis=1) == k)[:, None], deficit, apportion(k, weights))
    codes = pd.Categorical(free["label"], categories=classes).codes
    order = np.lexsort((unit_hash(free["unit_id"], spec.seed), codes))
    parts = np.repeat(np.tile(np.arange(len(PARTITIONS)), len(classes)), counts.ravel())
    out = np.empty(len(free), dtype=object)
    out[order] = np.asarray(PARTITIONS, dtype=object)[parts]
    return out


def split_grouped(units: pd.DataFrame, spec: SplitSpec, previous: pd.DataFrame | None = None,
                  mode: str = "stable", strata: int = 2) -> Assignment:
    """units: unit_id, label (the stratum; null = unlabelled). previous: unit_id, partition, label
    of the version this one continues (None for a first split). `strata`: the fewest strata the
    split needs (2 emotion classes; 1 for subjects, apportioned as one stratum)."""
    labels = units["label"]
    minimum = min_class_units(spec)
    small = _small_classes(labels, minimum)
    _check_classes(labels, small, minimum, strata)
    stratified = (labels.notna() & ~labels.isin(list(small))).to_numpy()
    part = _carried(units, previous, mode, minimum).to_numpy(copy=True)
    part[~stratified] = "pretrain"
    free = stratified & pd.isna(part)
    kept = pd.DataFrame({"label": labels[stratified & ~free], "partition": part[stratified & ~free]})
    if free.any():
        part[free] = _fill(units.loc[free, ["unit_id", "label"]], kept, spec)
    out = pd.DataFrame({"unit_id": units["unit_id"].to_numpy(), "label": labels.to_numpy(), "partition": part})
    return Assignment(out, small, minimum)


def _row_test(units: pd.DataFrame, spec: SplitSpec, small: dict[str, int]) -> np.ndarray:
    """Which rows form the test holdout: per class, `test` of its videos (largest remainder) in
    hash order of (video id, seed); whole videos, so a video never sits on both sides."""
    in_test = np.zeros(len(units), bool)
    if spec.stages.test <= 0:
        return in_test
    videos = units.loc[units["label"].notna() & ~units["label"].isin(list(small)), ["video_id", "label"]]
    videos = videos.drop_duplicates("video_id")
    for _, members in videos.groupby("label", sort=True):
        take = apportion([len(members)], [spec.stages.test, 1 - spec.stages.test])[0, 0]
        chosen = members["video_id"].to_numpy()[np.argsort(unit_hash(members["video_id"], spec.seed), kind="stable")]
        in_test |= units["video_id"].isin(chosen[:take]).to_numpy()
    return in_test


def _research_split(labels: np.ndarray, spec: SplitSpec, present: list[str]) -> np.ndarray:
    """The research code on these rows (in source order): a partition per row."""
    order = [c for c in spec.class_order if c in present] + [c for c in present if c not in spec.class_order]
    positions = pd.Series(np.arange(len(labels))).groupby(labels, sort=False).indices
    labelled = []
    for c in order:  # one step per class, not per unit
        rows = shuffle(positions[c], random_state=spec.seed)
        labelled.append(rows[int(spec.stages.pretrain * len(rows)):])
    lab = np.concatenate(labelled)
    t_a, t_b = _row_test_sizes(spec.stages)
    ssl, rest = train_test_split(lab, test_size=t_a, stratify=labels[lab], random_state=spec.seed)
    cls, fin = train_test_split(rest, test_size=t_b, stratify=labels[rest], random_state=spec.seed)
    part = np.full(len(labels), "pretrain", dtype=object)
    part[ssl], part[cls], part[fin] = "ssl", "classifier", "finetune"
    return part


def split_rows(units: pd.DataFrame, spec: SplitSpec) -> Assignment:
    """The test holdout of whole videos (`_row_test`), then the research procedure on the other
    rows; `units` (unit_id, label, video_id) must be in source order (path, frame). A class too
    small for the research procedure once its test videos are out goes to pretrain entirely."""
    if "video_id" not in units:
        units = units.assign(video_id=units["unit_id"])
    minimum = min_class_units(spec)
    small = _small_classes(units["label"], minimum)
    in_test = _row_test(units, spec, small)
    rest_sizes = units.loc[~in_test, "label"].value_counts()
    shrunk = {str(c): int(units["label"].eq(c).sum()) for c, n in rest_sizes.items()
              if n < minimum and str(c) not in small}
    if shrunk:  # too small once its test videos are out: the whole class goes to pretrain, reported
        small = {**small, **shrunk}
        in_test &= ~units["label"].isin(list(shrunk)).to_numpy()
    labels = units["label"].to_numpy(dtype=object)
    present = _check_classes(units.loc[~in_test, "label"], small, minimum)
    part = np.full(len(units), "test", dtype=object)
    part[~in_test] = _research_split(labels[~in_test], spec, present)
    out = pd.DataFrame({"unit_id": units["unit_id"].to_numpy(), "label": labels, "partition": part})
    return Assignment(out, small, minimum)


def split_units(units: pd.DataFrame, spec: SplitSpec, previous: pd.DataFrame | None = None,
                mode: str = "stable") -> Assignment:
    """Assign every unit a partition with the spec's strategy."""
    if spec.strategy not in STRATEGIES:
        raise SplitError(f"unknown strategy {spec.strategy!r}; known: {', '.join(STRATEGIES)}")
    if mode not in MODES:
        raise SplitError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    if spec.strategy == "row":
        return split_rows(units, spec)
    return split_grouped(units, spec, previous, mode, strata=1 if spec.group_key == "subject" else 2)


def unit_labels(rows: pd.DataFrame) -> pd.Series:
    """A unit's stratification label from its rows (unit_id, emotion): the most frequent emotion,
    ties to the alphabetically first; null when none of its rows is labelled. Indexed by unit_id."""
    known = rows.dropna(subset=["emotion"])
    counts = known.groupby(["unit_id", "emotion"], sort=False).size().reset_index(name="n")
    counts = counts.sort_values(["unit_id", "n", "emotion"], ascending=[True, False, True])
    top = counts.drop_duplicates("unit_id").set_index("unit_id")["emotion"]
    return top.reindex(pd.Index(rows["unit_id"].unique(), name="unit_id"))
