"""Training stages: prepare data, self-supervised pretraining, supervised multitask training,
pseudo-labelling, fine-tuning. Plain functions over a run directory (paths in, small dicts out),
so each is one Prefect task and a killed run resumes from its last epoch checkpoint.

Run directory `<AFFECTFLOW_HOME>/runs/<run_id>/`:
  data.npz, prep.json      the split's windows and unit labels, preprocessing, label map
  <stage>_last.pt          state after the last finished epoch (resume point)
  <stage>.pt               the stage's best weights and history (stage done)
  pseudo.npz               pseudo-labelled ssl units
  model.pt                 the final, self-contained checkpoint (tasks.checkpoint)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

from data_contracts import CONTRACT_VERSION
from data_contracts.training import METRICS, TRAINING_RUNS
from models.multitask import TASKS, ModelConfig, MultiTaskModel, pretrain_loss, task_losses
from models.weighting import build_weighting
from tasks.checkpoint import aggregate_units, predict_windows, save_checkpoint
from tasks.errors import SetupError
from tasks.features import (
    PARTITIONS,
    TRAIN_PARTITIONS,
    Preprocessing,
    Windows,
    fit_preprocessing,
    load_split,
    make_windows,
    save_json,
    unit_means,
)
from warehouse import Warehouse
from warehouse.writer import rows_to_table, write_atomic

STAGES = ("pretrain", "supervised", "finetune")
EpochCallback = Callable[[str, int, int, dict], None]


@dataclass(frozen=True)
class TrainConfig:
    encoder: str = "mlp"
    hidden: int = 64
    layers: int = 2
    window: int = 16
    dropout: float = 0.1
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    finetune_lr_factor: float = 0.3
    loss_weighting: str = "fixed"
    tasks: tuple[str, ...] = TASKS
    patience: int = 8
    val_fraction: float = 0.2
    mask_rate: float = 0.3
    pseudo_threshold: float = 0.6
    seed: int = 0
    device: str = "auto"
    deadline: float | None = None  # time.time() after which training stops (max minutes)

    def to_dict(self) -> dict:
        return {**asdict(self), "tasks": list(self.tasks)}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SetupError("device 'cuda' asked for, but torch sees no GPU; use device auto or cpu")
    return torch.device(name)


@dataclass
class Part:
    """One partition, model-ready: windows and per-unit targets and mean features."""

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


def _encode_part(data, prep: Preprocessing, emotions: list[str]) -> Part:
    index = {e: i for i, e in enumerate(emotions)}
    emotion = np.array([index.get(e, -1) if e else -1 for e in data.emotion], np.int64)
    stress = np.where(np.isnan(data.stress), -1, np.round(np.nan_to_num(data.stress))).astype(np.int64)
    va = np.stack([data.valence, data.arousal], 1).astype(np.float32).reshape(len(data), 2)
    return Part(list(data.units), make_windows(data.frames, prep), emotion, stress, va,
                unit_means(data.frames, prep))


def prepare_data(con, split_id: str, run_dir: Path, window: int) -> dict:
    """Load the split, fit the preprocessing on training partitions only, save model-ready data."""
    split = load_split(con, split_id)
    train_frames = [f for p in TRAIN_PARTITIONS for f in split.partitions[p].frames]
    prep = fit_preprocessing(train_frames, split.columns, window)
    labelled = [e for p in ("classifier", "finetune") for e in split.partitions[p].emotion if e]
    emotions = sorted(set(labelled))
    if not emotions:
        raise SetupError(f"split {split.split_id}: no emotion labels in the classifier/finetune partitions")
    prepared = Prepared(split.split_id, split.extractors, prep, emotions,
                        {p: _encode_part(split.partitions[p], prep, emotions) for p in PARTITIONS})
    save_prepared(run_dir, prepared)
    return {"split_id": split.split_id, "extractors": split.extractors, "n_features": len(prep.columns),
            "emotions": emotions, "units": {p: len(prepared.parts[p]) for p in PARTITIONS},
            "frames": {p: split.partitions[p].n_frames for p in PARTITIONS}}


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
        "preprocessing": prepared.prep.to_dict(),
        "units": {name: part.units for name, part in prepared.parts.items()}})


def load_prepared(run_dir: Path) -> Prepared:
    meta = json.loads((run_dir / "prep.json").read_text(encoding="utf-8"))
    arrays = np.load(run_dir / "data.npz")
    parts = {}
    for name, units in meta["units"].items():
        windows = Windows(*(arrays[f"{name}/{k}"] for k in ("x", "mask", "unit")))
        parts[name] = Part(units, windows, *(arrays[f"{name}/{k}"] for k in ("emotion", "stress", "va", "means")))
    return Prepared(meta["split_id"], meta["extractors"], Preprocessing.from_dict(meta["preprocessing"]),
                    meta["emotions"], parts)


def model_config(cfg: TrainConfig, prepared: Prepared) -> ModelConfig:
    return ModelConfig(cfg.encoder, len(prepared.prep.columns), len(prepared.emotions), tuple(cfg.tasks),
                       cfg.hidden, cfg.layers, cfg.window, cfg.dropout)


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


def epoch_seed(cfg: TrainConfig, stage: str, epoch: int) -> int:
    return cfg.seed * 100_003 + STAGES.index(stage) * 10_007 + epoch


def _supervised_step(model, weighting, batch, training: bool, generator) -> tuple[torch.Tensor, list[float]]:
    x, mask, targets = batch
    parts = task_losses(model(x, mask), targets)
    # Validation is unweighted so that early stopping compares alike across weighting schemes.
    total = weighting(parts, model.shared_parameters()) if training else torch.stack(parts).sum()
    return total, [float(p.detach()) for p in parts]


def _pretrain_step(rate: float):
    def step(model, weighting, batch, training: bool, generator):
        x, mask, _ = batch
        loss = pretrain_loss(model, x, mask, rate, generator)
        return loss, [float(loss.detach())]
    return step


def _run_epoch(model, weighting, data: TensorSet, step, cfg: TrainConfig, seed: int,
               optimizer: torch.optim.Optimizer | None) -> dict:
    """One pass over `data`; trains when an optimizer is given. Returns mean losses and speed."""
    device = next(model.parameters()).device
    training = optimizer is not None
    model.train(training)
    weighting.train(training)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=generator) if training else torch.arange(len(data))
    totals, parts, frames, started = [], [], 0, time.perf_counter()
    for start in range(0, len(data), cfg.batch_size):
        batch = data.batch(order[start:start + cfg.batch_size], device)
        with torch.set_grad_enabled(training):
            loss, values = step(model, weighting, batch, training, generator)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        totals.append(float(loss.detach()))
        parts.append(values)
        frames += int(batch[1].sum())
    seconds = max(time.perf_counter() - started, 1e-9)
    return {"loss": float(np.mean(totals)) if totals else float("nan"),
            "parts": np.mean(parts, 0).tolist() if parts else [], "frames": frames, "seconds": seconds,
            "frames_per_s": frames / seconds}


def _optimizer(model, weighting, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    extra = [p for p in weighting.parameters() if p.requires_grad]
    groups = [{"params": list(model.parameters()), "weight_decay": cfg.weight_decay}]
    if extra:  # the weighting's own parameters (uncertainty weighting) at its own learning rate
        groups.append({"params": extra, "weight_decay": 0.0, "lr": getattr(weighting, "lr", lr)})
    return torch.optim.AdamW(groups, lr=lr)


def _save_atomic(payload: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _snapshot(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class _FitState(TypedDict):
    """Early-stopping state, saved in every resume point."""

    epoch: int
    best: dict[str, torch.Tensor]
    best_weighting: dict[str, torch.Tensor]
    best_val: float
    bad: int
    history: list[dict]


def _fit(run_dir: Path, stage: str, model, weighting, train: TensorSet, val: TensorSet | None, step,
         cfg: TrainConfig, lr: float, on_epoch: EpochCallback | None) -> list[dict]:
    """Train with early stopping on `val` (a slice of the training units), saving a resume point
    after every epoch; leaves the best weights in `model`."""
    last = run_dir / f"{stage}_last.pt"
    optimizer = _optimizer(model, weighting, cfg, lr)
    state: _FitState = {"epoch": 0, "best": _snapshot(model), "best_weighting": _snapshot(weighting),
                        "best_val": float("inf"), "bad": 0, "history": []}
    if last.exists():
        saved = torch.load(last, map_location=next(model.parameters()).device, weights_only=True)
        model.load_state_dict(saved["model"])
        weighting.load_state_dict(saved["weighting"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
    for epoch in range(state["epoch"], cfg.epochs):
        if state["bad"] >= cfg.patience or (cfg.deadline and time.time() > cfg.deadline):
            break
        trained = _run_epoch(model, weighting, train, step, cfg, epoch_seed(cfg, stage, epoch), optimizer)
        checked = _run_epoch(model, weighting, val if val is not None else train, step, cfg, cfg.seed, None)
        record = {"stage": stage, "epoch": epoch + 1, "train_loss": trained["loss"],
                  "val_loss": checked["loss"], "task_losses": trained["parts"],
                  "weights": [float(w) for w in weighting.weights], "frames_per_s": trained["frames_per_s"],
                  "frames": trained["frames"], "seconds": trained["seconds"]}
        if checked["loss"] < state["best_val"] - 1e-6:
            state.update({"best": _snapshot(model), "best_weighting": _snapshot(weighting),
                          "best_val": checked["loss"], "bad": 0})
        else:
            state["bad"] += 1
        state["epoch"] = epoch + 1
        state["history"].append(record)
        _save_atomic({"model": model.state_dict(), "weighting": weighting.state_dict(),
                      "optimizer": optimizer.state_dict(), "state": state}, last)
        if on_epoch:
            on_epoch(stage, epoch + 1, cfg.epochs, record)
    model.load_state_dict(state["best"])
    weighting.load_state_dict(state["best_weighting"])
    return state["history"]


def throughput(parts: list[dict]) -> float | None:
    """Frames trained on per second of training, over all epochs (or stages) together: a mean of
    per-epoch rates would let one-batch epochs of a few milliseconds dominate."""
    frames = sum(p.get("frames") or 0 for p in parts)
    seconds = sum(p.get("seconds") or 0.0 for p in parts)
    return frames / seconds if frames and seconds else None


def _stage_summary(stage: str, history: list[dict], **extra) -> dict:
    best = min((h["val_loss"] for h in history), default=None)
    totals = {"frames": sum(h.get("frames") or 0 for h in history),
              "seconds": sum(h.get("seconds") or 0.0 for h in history)}
    return {"stage": stage, "epochs_run": len(history), "best_val_loss": best, **totals,
            "frames_per_s": throughput([totals]), "history": history, **extra}


def stage_file(run_dir: Path, before: str | None = None) -> Path | None:
    """The latest finished stage's weights (strictly before `before`, when given)."""
    stages = STAGES[: STAGES.index(before)] if before else STAGES
    for stage in reversed(stages):
        if (run_dir / f"{stage}.pt").exists():
            return run_dir / f"{stage}.pt"
    return None


def build_model(run_dir: Path, cfg: TrainConfig, prepared: Prepared, before: str | None = None) -> MultiTaskModel:
    """A model seeded by `cfg.seed`, starting from the latest finished stage's weights."""
    torch.manual_seed(cfg.seed)
    model = MultiTaskModel(model_config(cfg, prepared))
    source = stage_file(run_dir, before)
    if source is not None:
        model.load_state_dict(torch.load(source, map_location="cpu", weights_only=True)["model"])
    return model.to(resolve_device(cfg.device))


def _run_stage(run_dir: Path, stage: str, cfg: TrainConfig, train: TensorSet | None,
               val: TensorSet | None, step, weighting, lr: float, on_epoch: EpochCallback | None) -> dict:
    done = run_dir / f"{stage}.pt"
    if done.exists():  # finished before a restart
        return torch.load(done, map_location="cpu", weights_only=True)["summary"]
    if train is None or len(train) == 0:
        return {"stage": stage, "epochs_run": 0, "skipped": "no units in this stage's partitions"}
    prepared = load_prepared(run_dir)
    model = build_model(run_dir, cfg, prepared, before=stage)
    weighting = weighting.to(next(model.parameters()).device)
    history = _fit(run_dir, stage, model, weighting, train, val, step, cfg, lr, on_epoch)
    summary = _stage_summary(stage, history, weights=[float(w) for w in weighting.weights])
    _save_atomic({"model": model.state_dict(), "summary": summary}, done)
    (run_dir / f"{stage}_last.pt").unlink(missing_ok=True)
    return summary


def _split_sets(part: Part, cfg: TrainConfig, labels: np.ndarray) -> tuple[TensorSet, TensorSet | None]:
    train_units, val_units = validation_split(labels, cfg.val_fraction, cfg.seed)
    val = tensor_set(part, val_units) if len(val_units) else None
    return tensor_set(part, train_units), val


def pretrain(run_dir: Path, cfg: TrainConfig, on_epoch: EpochCallback | None = None) -> dict:
    """Masked feature reconstruction on the pretrain and ssl units, labels unused."""
    prepared = load_prepared(run_dir)
    parts = [prepared.parts[p] for p in ("pretrain", "ssl") if len(prepared.parts[p])]
    pairs = [_split_sets(p, cfg, np.zeros(len(p), np.int64)) for p in parts]
    train = concat_sets([t for t, _ in pairs]) if pairs else None
    vals = [v for _, v in pairs if v is not None]
    return _run_stage(run_dir, "pretrain", cfg, train, concat_sets(vals) if vals else None,
                      _pretrain_step(cfg.mask_rate), build_weighting("fixed", 1), cfg.lr, on_epoch)


def supervised(run_dir: Path, cfg: TrainConfig, on_epoch: EpochCallback | None = None) -> dict:
    """Multitask training on the classifier partition."""
    part = load_prepared(run_dir).parts["classifier"]
    train, val = _split_sets(part, cfg, part.emotion) if len(part) else (None, None)
    return _run_stage(run_dir, "supervised", cfg, train, val, _supervised_step,
                      build_weighting(cfg.loss_weighting, len(cfg.tasks)), cfg.lr, on_epoch)


def pseudo_label(run_dir: Path, cfg: TrainConfig) -> dict:
    """Label ssl units whose predicted emotion probability reaches the threshold; fine-tuning
    then trains on them (emotion only: their other labels are never used)."""
    prepared = load_prepared(run_dir)
    ssl = prepared.parts["ssl"]
    if "emotion" not in cfg.tasks or not len(ssl) or not (run_dir / "supervised.pt").exists():
        return {"pseudo_labelled": 0, "ssl_units": len(ssl)}
    model = build_model(run_dir, cfg, prepared)
    probs = aggregate_units(predict_windows(model, ssl.windows), ssl.windows.unit, len(ssl))["emotion"]
    labels = np.where(probs.max(1) >= cfg.pseudo_threshold, probs.argmax(1), -1).astype(np.int64)
    np.save(run_dir / "pseudo.npy", labels)
    return {"pseudo_labelled": int((labels >= 0).sum()), "ssl_units": len(ssl),
            "threshold": cfg.pseudo_threshold}


def _pseudo_set(run_dir: Path, ssl: Part) -> TensorSet | None:
    path = run_dir / "pseudo.npy"
    if not path.exists() or not len(ssl):
        return None
    labels = np.load(path)
    if not (labels >= 0).any():
        return None
    blind = replace(ssl, emotion=labels, stress=np.full(len(ssl), -1, np.int64),
                    va=np.full((len(ssl), 2), np.nan, np.float32))
    return tensor_set(blind, np.flatnonzero(labels >= 0))


def finetune(run_dir: Path, cfg: TrainConfig, on_epoch: EpochCallback | None = None) -> dict:
    """Continue training on the finetune partition (plus pseudo-labelled ssl units) at a lower
    learning rate, early-stopped on a slice of the finetune units."""
    prepared = load_prepared(run_dir)
    part = prepared.parts["finetune"]
    sets, val = [], None
    if len(part):
        train, val = _split_sets(part, cfg, part.emotion)
        sets.append(train)
    pseudo = _pseudo_set(run_dir, prepared.parts["ssl"])
    if pseudo is not None:
        sets.append(pseudo)
    return _run_stage(run_dir, "finetune", cfg, concat_sets(sets) if sets else None, val, _supervised_step,
                      build_weighting(cfg.loss_weighting, len(cfg.tasks)),
                      cfg.lr * cfg.finetune_lr_factor, on_epoch)


def finish_run(run_dir: Path, cfg: TrainConfig, results: dict) -> Path:
    """Write the self-contained checkpoint `model.pt` (final weights + metrics)."""
    prepared = load_prepared(run_dir)
    model = build_model(run_dir, cfg, prepared)
    source = stage_file(run_dir)
    extra = {"train_config": cfg.to_dict(), "extractors": prepared.extractors,
             "stage": source.stem if source else None}
    return save_checkpoint(run_dir / "model.pt", model, prepared.prep, prepared.emotions,
                           prepared.split_id, results, extra)


def record_run(wh: Warehouse, row: dict, metric_rows: list[dict]) -> None:
    """One `training_runs` row and the run's `metrics` rows, each in its own Parquet file."""
    write_atomic(wh.file_for("training_runs", row["run_id"]), rows_to_table(TRAINING_RUNS, [row]))
    if metric_rows:
        write_atomic(wh.file_for("metrics", row["run_id"]), rows_to_table(METRICS, metric_rows))


def run_row(run_id: str, cfg: TrainConfig, info: dict, stages: list[dict], params_json: str,
            started_at, finished_at, checkpoint: Path | None, error: str | None = None) -> dict:
    """The `training_runs` row of a run (completed when `error` is None)."""
    return {
        "run_id": run_id, "split_id": info.get("split_id") or "unknown",
        "status": "failed" if error else "completed", "started_at": started_at, "finished_at": finished_at,
        "params": params_json, "encoder": cfg.encoder, "loss_weighting": cfg.loss_weighting,
        "stages": ",".join(s["stage"] for s in stages if s.get("epochs_run")),
        "tasks": ",".join(cfg.tasks), "device": str(resolve_device(cfg.device)) if not error else cfg.device,
        "extractor": ",".join(info.get("extractors", [])) or None, "n_features": info.get("n_features", 0),
        "train_units": sum(v for k, v in info.get("units", {}).items() if k != "test"),
        "test_units": info.get("units", {}).get("test", 0),
        "epochs_run": sum(s.get("epochs_run", 0) for s in stages),
        "frames_per_s": throughput(stages),
        "checkpoint": str(checkpoint) if checkpoint else "", "contract_version": CONTRACT_VERSION,
        "error": error,
    }
