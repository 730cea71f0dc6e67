"""Model-ready training data: a split's units as windows with their labels, which units each
protocol trains on, the checks that refuse a split before any training, and the folds that
ensemble members and validation slices are cut from (training units only, never the test set).

Run directory files written here: `data.npz` (windows and unit labels per partition) and
`prep.json` (preprocessing, label map, unit ids, the protocol's labelled partitions, the
feature column choice).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tasks.errors import SetupError
from tasks.features import (
    LABELLED_TRAIN_PARTITIONS,
    PARTITIONS,
    TRAIN_PARTITIONS,
    Preprocessing,
    SplitData,
    Windows,
    fit_preprocessing,
    load_split,
    make_windows,
    save_json,
    unit_means,
)

PROTOCOLS = ("pooled", "research")
# The partitions whose labels the supervised stages (and so the baselines) learn from.
SUPERVISED_PARTITIONS = {"pooled": LABELLED_TRAIN_PARTITIONS, "research": ("classifier", "finetune")}
# The partitions the self-supervised stage reconstructs, labels unused.
PRETRAIN_PARTITIONS = {"pooled": TRAIN_PARTITIONS, "research": ("pretrain", "ssl")}


@dataclass
class Part:
    """One partition (or several merged), model-ready: windows and per-unit targets and means."""

    units: list[str]
    windows: Windows
    emotion: np.ndarray  # (U,) int64, -1 missing or not in the label map
    stress: np.ndarray  # (U,) int64, -1 missing
    va: np.ndarray  # (U, 2) float32, NaN missing
    means: np.ndarray  # (U, F) float32

    def __len__(self) -> int:
        return len(self.units)


@dataclass
class Prepared:
    split_id: str
    extractors: list[str]
    prep: Preprocessing
    emotions: list[str]
    parts: dict[str, Part] = field(default_factory=dict)
    protocol: str = "pooled"
    features: dict = field(default_factory=dict)  # ColumnChoice.to_dict()

    @property
    def labelled(self) -> tuple[str, ...]:
        """The partitions whose labels the model (and the baselines) are trained on."""
        return SUPERVISED_PARTITIONS[self.protocol]


def merge_parts(parts: list[Part]) -> Part:
    """Several partitions as one (window owners renumbered)."""
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0, *(len(p) for p in parts[:-1])])
    windows = Windows(np.concatenate([p.windows.x for p in parts]), np.concatenate([p.windows.mask for p in parts]),
                      np.concatenate([p.windows.unit + o for p, o in zip(parts, offsets, strict=True)]))
    return Part([u for p in parts for u in p.units], windows, *(np.concatenate([getattr(p, k) for p in parts])
                                                                  for k in ("emotion", "stress", "va", "means")))


def labelled_units(prepared: Prepared, exclude: tuple[str, ...] = ()) -> Part:
    """The protocol's labelled training units as one part (the model's and the baselines')."""
    return merge_parts([prepared.parts[p] for p in prepared.labelled if p not in exclude])


def _encode_part(data, prep: Preprocessing, emotions: list[str]) -> Part:
    index = {e: i for i, e in enumerate(emotions)}
    emotion = np.array([index.get(e, -1) if e else -1 for e in data.emotion], np.int64)
    stress = np.where(np.isnan(data.stress), -1, np.round(np.nan_to_num(data.stress))).astype(np.int64)
    va = np.stack([data.valence, data.arousal], 1).astype(np.float32).reshape(len(data), 2)
    return Part(list(data.units), make_windows(data.frames, prep), emotion, stress, va,
                unit_means(data.frames, prep))


def unit_window(split: SplitData, window: int) -> int:
    """`window`, or the longest unit when that is shorter: units of one frame (images) then train
    frame by frame, without padding every one of them to a window of mostly nothing."""
    longest = max((len(f) for p in split.partitions.values() for f in p.frames), default=1)
    return max(1, min(window, longest))


def check_split_for(split: SplitData, protocol: str) -> list[str]:
    """Refuse, in plain words, a split this protocol cannot train and score on: no labelled
    training units, a single class, a test class with no training unit. Returns the classes."""
    supervised = SUPERVISED_PARTITIONS[protocol]
    labels = [e for p in supervised for e in split.partitions[p].emotion if e]
    where = f"split {split.split_id} ({'/'.join(supervised)} partitions, protocol {protocol})"
    if protocol == "research" and not any(split.partitions["classifier"].emotion):
        raise SetupError(f"{where}: the classifier partition, which the research protocol's supervised "
                         "stage trains on, has no labelled unit; use protocol pooled or resplit")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise SetupError(f"{where}: {len(labels)} labelled training units of {len(classes)} emotion class "
                         f"({', '.join(classes) or 'none'}); a classifier needs two or more: resplit with a smaller "
                         "pretrain fraction, or label more units")
    unseen = sorted({e for e in split.partitions["test"].emotion if e} - set(classes))
    if unseen:
        counts = {e: split.partitions["test"].emotion.count(e) for e in unseen}
        raise SetupError(f"{where}: test classes with no labelled training unit, so never predictable: "
                         f"{counts}; resplit (e.g. with a smaller pretrain fraction)")
    return classes


def prepare_data(con, split_id: str, run_dir: Path, window: int, protocol: str = "pooled",
                 extractor: str | None = None) -> dict:
    """Load the split (one extractor's units and columns), check it for the protocol, fit the
    preprocessing on training partitions only, save model-ready data. Returns the run's info."""
    if protocol not in PROTOCOLS:
        raise SetupError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    split = load_split(con, split_id, extractor)
    emotions = check_split_for(split, protocol)
    train_frames = [f for p in TRAIN_PARTITIONS for f in split.partitions[p].frames]
    prep = fit_preprocessing(train_frames, split.columns, unit_window(split, window))
    choice = split.choice.to_dict() if split.choice else {}
    prepared = Prepared(split.split_id, split.extractors, prep, emotions,
                        {p: _encode_part(split.partitions[p], prep, emotions) for p in PARTITIONS},
                        protocol, choice)
    save_prepared(run_dir, prepared)
    return {"split_id": split.split_id, "extractors": split.extractors, "n_features": len(prep.columns),
            "emotions": emotions, "units": {p: len(prepared.parts[p]) for p in PARTITIONS},
            "frames": {p: split.partitions[p].n_frames for p in PARTITIONS}, "window": prep.window,
            "protocol": protocol, "labelled_partitions": list(prepared.labelled),
            "labelled_units": len(labelled_units(prepared)),
            "features": split.choice.summary() if split.choice else "",
            "dropped_columns": split.choice.dropped if split.choice else {},
            "excluded_units": split.excluded or {}}


def save_prepared(run_dir: Path, prepared: Prepared) -> None:
    arrays = {}
    for name, part in prepared.parts.items():
        for key in ("emotion", "stress", "va", "means"):
            arrays[f"{name}/{key}"] = getattr(part, key)
        for key in ("x", "mask", "unit"):
            arrays[f"{name}/{key}"] = getattr(part.windows, key)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".data.npz.tmp", "wb") as fh:
        np.savez(fh, **arrays)
    (run_dir / ".data.npz.tmp").replace(run_dir / "data.npz")
    save_json(run_dir / "prep.json", {
        "split_id": prepared.split_id, "extractors": prepared.extractors, "emotions": prepared.emotions,
        "preprocessing": prepared.prep.to_dict(), "protocol": prepared.protocol, "features": prepared.features,
        "units": {name: part.units for name, part in prepared.parts.items()}})


def load_prepared(run_dir: Path) -> Prepared:
    meta = json.loads((run_dir / "prep.json").read_text(encoding="utf-8"))
    arrays = np.load(run_dir / "data.npz")
    parts = {}
    for name, units in meta["units"].items():
        windows = Windows(*(arrays[f"{name}/{k}"] for k in ("x", "mask", "unit")))
        parts[name] = Part(units, windows, *(arrays[f"{name}/{k}"] for k in ("emotion", "stress", "va", "means")))
    return Prepared(meta["split_id"], meta["extractors"], Preprocessing.from_dict(meta["preprocessing"]),
                    meta["emotions"], parts, meta.get("protocol", "research"), meta.get("features", {}))


@dataclass
class TensorSet:
    """Windows with their unit's targets, ready for batching."""

    x: torch.Tensor
    mask: torch.Tensor
    targets: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, index: torch.Tensor, device: torch.device):
        targets = {k: v[index].to(device) for k, v in self.targets.items()}
        return self.x[index].to(device), self.mask[index].to(device), targets


def tensor_set(part: Part, units: np.ndarray | None = None, emotion: np.ndarray | None = None) -> TensorSet:
    """Windows of the chosen units (all by default); `emotion` overrides the unit emotion labels."""
    keep = np.ones(len(part.windows.unit), bool) if units is None else np.isin(part.windows.unit, units)
    owner = part.windows.unit[keep]
    labels = part.emotion if emotion is None else emotion
    targets = {"emotion": torch.from_numpy(labels[owner]), "stress": torch.from_numpy(part.stress[owner]),
               "valence_arousal": torch.from_numpy(part.va[owner])}
    return TensorSet(torch.from_numpy(part.windows.x[keep]), torch.from_numpy(part.windows.mask[keep]), targets)


def concat_sets(sets: list[TensorSet]) -> TensorSet:
    return TensorSet(torch.cat([s.x for s in sets]), torch.cat([s.mask for s in sets]),
                     {k: torch.cat([s.targets[k] for s in sets]) for k in sets[0].targets})


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit indices for training and validation, stratified by label; classes with fewer than
    three units stay in training. Never touches the test partition."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        take = int(round(len(members) * fraction)) if len(members) >= 3 else 0
        take = max(take, 1) if len(members) >= 3 and fraction > 0 else take
        val.extend(members[:take])
        train.extend(members[take:])
    return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(val, np.int64))


def member_folds(labels: np.ndarray, members: int, fraction: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) unit indices for each ensemble member. One member: a stratified
    `fraction` validation slice. Several: stratified folds, member k validating on fold k and
    training on the others, so together they learn from every unit; a class with fewer units
    than folds validates in some folds only, and one with fewer than three stays in every
    member's training units."""
    if members <= 1:
        return [validation_split(labels, fraction, seed)]
    rng = np.random.default_rng(seed)
    fold = np.full(len(labels), -1, np.int64)
    start = 0
    for label in np.unique(labels):
        owners = rng.permutation(np.flatnonzero(labels == label))
        if len(owners) >= 3:
            fold[owners] = (np.arange(len(owners)) + start) % members
            start += len(owners)  # rotate so that the folds' sizes stay within one of each other
    everything = np.arange(len(labels))
    return [(everything[fold != k], everything[fold == k]) for k in range(members)]


def class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Balanced class weights n / (k * count) over the labelled samples (1 for absent classes)."""
    counts = torch.bincount(labels[labels >= 0], minlength=n_classes).to(torch.float32)
    present = counts > 0
    weights = torch.ones(n_classes)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return weights
