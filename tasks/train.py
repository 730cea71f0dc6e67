"""Training stages: self-supervised pretraining, supervised multitask training, pseudo-labelling,
fine-tuning. Plain functions over a run directory (paths in, small dicts out), so each is one
Prefect task and a killed run resumes from its last epoch checkpoint.

Two protocols (`TrainConfig.protocol`):
- `pooled` (default): masked-feature pretraining on every training unit without its labels, then
  supervised multitask training on every labelled training unit (ssl + classifier + finetune).
  The supervised stage is an ensemble: member k trains on all folds of those units but fold k and
  early-stops on fold k, so the ensemble learns from every label and no decision ever sees the
  test set; weight decay and dropout are chosen from `REGULARISATION` by the first fold's
  validation loss; emotion classes are balanced by weight; the emotion loss is label-smoothed in
  training (`label_smoothing`), not in validation, so early stopping on the validation loss no
  longer halts when the net grows confident instead of wrong (measured: openface-labelled, all
  labelled, 3 seeds, macro-F1 0.762 without, 0.860 with 0.1, 0.831 with 0.2; default split
  0.512 -> 0.530). With `personalise` the finetune
  partition is held out of that stage and each member is fine-tuned on it afterwards.
- `research`: the research pipeline's stages as it ran them: pretraining on pretrain + ssl,
  supervised training on `classifier`, confident pseudo-labels on `ssl`, fine-tuning on
  `finetune` (+ the pseudo-labelled units); one model, no class weights, no ensemble.

Run directory `<AFFECTFLOW_HOME>/runs/<run_id>/`:
  data.npz, prep.json      the split's windows and unit labels, preprocessing, label map
  <fit>_last.pt            state after the last finished epoch of a fit (resume point)
  <fit>.pt                 a finished fit's best weights and history
  <stage>.pt               the stage's result (several members for an ensemble)
  pseudo.npy               pseudo-labels of the ssl units (research)
  model.pt                 the final, self-contained checkpoint (tasks.checkpoint)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TypedDict, cast

import numpy as np
import torch

from data_contracts import CONTRACT_VERSION, LABELS
from data_contracts.training import METRICS, TRAINING_RUNS
from models.multitask import (
    TASKS,
    EnsembleModel,
    ModelConfig,
    MultiTaskModel,
    pretrain_loss,
    task_losses,
)
from models.weighting import build_weighting
from tasks.checkpoint import aggregate_units, predict_windows, save_checkpoint
from tasks.errors import SetupError
from tasks.features import save_json
from tasks.training_data import (
    PRETRAIN_PARTITIONS,
    PROTOCOLS,
    Part,
    Prepared,
    TensorSet,
    class_weights,
    concat_sets,
    labelled_units,
    load_prepared,
    member_folds,
    prepare_data,
    tensor_set,
    validation_split,
)
from warehouse import Warehouse
from warehouse.writer import rows_to_table, write_atomic

__all__ = ["PROTOCOLS", "STAGES", "TrainConfig", "finetune", "finish_run", "load_prepared", "prepare_data",
           "pretrain", "pseudo_label", "record_run", "run_row", "save_json", "supervised", "validation_split"]

STAGES = ("pretrain", "supervised", "finetune")
SMALL_FIT_WINDOWS = 20_000  # below this, one CPU thread: small models gain nothing from more
_ALL_THREADS = torch.get_num_threads()
# (weight decay, dropout) candidates of the pooled protocol's supervised stage
REGULARISATION = ((1e-4, 0.1), (1e-2, 0.3), (1e-1, 0.5))
EpochCallback = Callable[[str, int, int, dict], None]


def _label_range(name: str) -> tuple[float, float]:
    (column,) = [c for c in LABELS.columns if c.name == name]
    assert column.range is not None and None not in column.range
    return float(column.range[0]), float(column.range[1])  # type: ignore[arg-type]


VA_RANGE = _label_range("valence")
if _label_range("arousal") != VA_RANGE:
    raise ValueError("valence and arousal share one bounded head; their contract ranges must agree")


@dataclass(frozen=True)
class TrainConfig:
    protocol: str = "pooled"
    encoder: str = "linear"
    hidden: int = 64
    layers: int = 2
    window: int = 16
    dropout: float = 0.1
    epochs: int = 200
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-2
    finetune_lr_factor: float = 0.3
    loss_weighting: str = "fixed"
    tasks: tuple[str, ...] = TASKS
    patience: int = 20
    val_fraction: float = 0.2
    mask_rate: float = 0.3
    pseudo_threshold: float = 0.6
    ensemble: int = 5  # pooled: members, each validated on its own fold
    label_smoothing: float = 0.1  # pooled: of the emotion loss in training (validation loss: none)
    select_regularisation: bool = True  # pooled: weight decay and dropout from REGULARISATION
    class_weights: bool = True  # pooled: balanced emotion class weights
    personalise: bool = False  # pooled: fine-tune on the finetune partition instead of pooling it
    extractor: str | None = None  # the extractor whose units to train on, when a split mixes several
    resume_every_s: float = 0.0  # least seconds between resume points (0: after every epoch)
    threads: int = 0  # CPU threads; 0: one for fits under SMALL_FIT_WINDOWS windows, else all
    seed: int = 0
    device: str = "auto"
    deadline: float | None = None  # time.time() after which training stops (max minutes)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; known: {', '.join(PROTOCOLS)}")

    def to_dict(self) -> dict:
        return {**asdict(self), "tasks": list(self.tasks)}

    @property
    def pooled(self) -> bool:
        return self.protocol == "pooled"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SetupError("device 'cuda' asked for, but torch sees no GPU; use device auto or cpu")
    return torch.device(name)


def use_threads(cfg: TrainConfig, windows: int) -> int:
    """Set torch's CPU threads for a fit of `windows` windows: `cfg.threads`, or with 0 one thread
    for a small fit (its matrices are too small to split, and spare threads spin on shared cores:
    20x slower measured on a loaded 2-core machine) and all of them for a big one."""
    threads = cfg.threads or (1 if windows < SMALL_FIT_WINDOWS else _ALL_THREADS)
    torch.set_num_threads(threads)
    return threads


def model_config(cfg: TrainConfig, prepared: Prepared, dropout: float | None = None) -> ModelConfig:
    return ModelConfig(cfg.encoder, len(prepared.prep.columns), len(prepared.emotions), tuple(cfg.tasks),
                       cfg.hidden, cfg.layers, prepared.prep.window, cfg.dropout if dropout is None else dropout,
                       VA_RANGE)


@dataclass(frozen=True)
class Fit:
    """One model's training run within a stage: `<name>.pt` when done, `<name>_last.pt` meanwhile."""

    stage: str
    name: str
    index: int = 0  # member or candidate number, for seeds and records


def epoch_seed(cfg: TrainConfig, fit: Fit, epoch: int) -> int:
    return cfg.seed * 100_003 + STAGES.index(fit.stage) * 10_007 + fit.index * 1_009 + epoch


def _supervised_step(class_weight: torch.Tensor | None = None, smoothing: float = 0.0):
    """One batch's task losses; `smoothing`: the emotion loss's label smoothing, in training only
    (validation compares plain losses)."""
    def step(model, weighting, batch, training: bool, generator) -> tuple[torch.Tensor, list[float]]:
        x, mask, targets = batch
        weight = None if class_weight is None else class_weight.to(x.device)
        parts = task_losses(model(x, mask), targets, weight, smoothing if training else 0.0)
        # Validation is unweighted across tasks so that early stopping compares alike across schemes.
        total = weighting(parts, model.shared_parameters()) if training else torch.stack(parts).sum()
        return total, [float(p.detach()) for p in parts]
    return step


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


def _resume(last: Path, model, weighting, optimizer, state: _FitState) -> _FitState:
    if not last.exists():
        return state
    saved = torch.load(last, map_location=next(model.parameters()).device, weights_only=True)
    model.load_state_dict(saved["model"])
    weighting.load_state_dict(saved["weighting"])
    optimizer.load_state_dict(saved["optimizer"])
    return saved["state"]


def _fit(run_dir: Path, fit: Fit, model, weighting, train: TensorSet, val: TensorSet | None, step,
         cfg: TrainConfig, lr: float, on_epoch: EpochCallback | None) -> list[dict]:
    """Train with early stopping on `val` (a slice of the training units), saving a resume point
    after an epoch when `cfg.resume_every_s` have passed since the last one (0: every epoch);
    leaves the best weights in `model`."""
    last = run_dir / f"{fit.name}_last.pt"
    optimizer = _optimizer(model, weighting, cfg, lr)
    state: _FitState = {"epoch": 0, "best": _snapshot(model), "best_weighting": _snapshot(weighting),
                        "best_val": float("inf"), "bad": 0, "history": []}
    state = _resume(last, model, weighting, optimizer, state)
    saved_at = time.monotonic()
    for epoch in range(state["epoch"], cfg.epochs):
        if state["bad"] >= cfg.patience or (cfg.deadline and time.time() > cfg.deadline and state["history"]):
            break
        trained = _run_epoch(model, weighting, train, step, cfg, epoch_seed(cfg, fit, epoch), optimizer)
        checked = _run_epoch(model, weighting, val if val is not None else train, step, cfg, cfg.seed, None)
        record = {"stage": fit.stage, "fit": fit.name, "epoch": epoch + 1, "train_loss": trained["loss"],
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
        if time.monotonic() - saved_at >= cfg.resume_every_s:
            _save_atomic({"model": model.state_dict(), "weighting": weighting.state_dict(),
                          "optimizer": optimizer.state_dict(), "state": state}, last)
            saved_at = time.monotonic()
        if on_epoch:
            on_epoch(fit.stage, epoch + 1, cfg.epochs, record)
    model.load_state_dict(state["best"])
    weighting.load_state_dict(state["best_weighting"])
    return state["history"]


def throughput(parts: list[dict]) -> float | None:
    """Frames trained on per second of training, over all epochs (or stages) together: a mean of
    per-epoch rates would let one-batch epochs of a few milliseconds dominate."""
    frames = sum(p.get("frames") or 0 for p in parts)
    seconds = sum(p.get("seconds") or 0.0 for p in parts)
    return frames / seconds if frames and seconds else None


def _summary(stage: str, history: list[dict], **extra) -> dict:
    best = min((h["val_loss"] for h in history), default=None)
    totals = {"frames": sum(h.get("frames") or 0 for h in history),
              "seconds": sum(h.get("seconds") or 0.0 for h in history)}
    return {"stage": stage, "epochs_run": len(history), "best_val_loss": best, **totals,
            "frames_per_s": throughput([totals]), "history": history, **extra}


def _new_model(cfg: TrainConfig, prepared: Prepared, seed: int, dropout: float | None = None) -> MultiTaskModel:
    torch.manual_seed(seed)
    return MultiTaskModel(model_config(cfg, prepared, dropout))


def _load_stage(run_dir: Path, stage: str) -> dict | None:
    path = run_dir / f"{stage}.pt"
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


def stage_file(run_dir: Path, before: str | None = None) -> Path | None:
    """The latest finished stage's result (strictly before `before`, when given)."""
    stages = STAGES[: STAGES.index(before)] if before else STAGES
    for stage in reversed(stages):
        if (run_dir / f"{stage}.pt").exists():
            return run_dir / f"{stage}.pt"
    return None


def build_model(run_dir: Path, cfg: TrainConfig, prepared: Prepared,
                before: str | None = None) -> MultiTaskModel | EnsembleModel:
    """The model of the latest finished stage (before `before`): one model or an ensemble, with the
    dropout it was trained with; a fresh model seeded by `cfg.seed` when no stage has finished."""
    source = stage_file(run_dir, before)
    saved = torch.load(source, map_location="cpu", weights_only=True) if source else {}
    dropout = saved.get("regularisation", {}).get("dropout")
    model: MultiTaskModel | EnsembleModel
    if saved.get("members"):
        torch.manual_seed(cfg.seed)
        model = EnsembleModel(model_config(cfg, prepared, dropout), int(saved["members"]))
    else:
        model = _new_model(cfg, prepared, cfg.seed, dropout)
    if saved:
        model.load_state_dict(saved["model"])
    return model.to(resolve_device(cfg.device))


def _start_model(run_dir: Path, cfg: TrainConfig, prepared: Prepared, fit: Fit,
                 dropout: float | None = None) -> MultiTaskModel:
    """A member's starting point: the pretrained weights when pretraining ran, else a fresh model
    (seeded per member, so the members of an ensemble start apart)."""
    model = _new_model(cfg, prepared, cfg.seed + fit.index, dropout)
    pretrained = _load_stage(run_dir, "pretrain") if fit.stage != "pretrain" else None
    if pretrained is not None:
        model.load_state_dict(pretrained["model"])
    return model.to(resolve_device(cfg.device))


def _run_fit(run_dir: Path, fit: Fit, cfg: TrainConfig, model: torch.nn.Module, train: TensorSet,
             val: TensorSet | None, step, lr: float, on_epoch: EpochCallback | None) -> dict:
    """Train `model` (its best weights stay in it) unless the fit finished before a restart, in
    which case its saved weights are loaded. Returns the fit's summary."""
    done = run_dir / f"{fit.name}.pt"
    if done.exists():
        saved = torch.load(done, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        return saved["summary"]
    weighting = build_weighting(cfg.loss_weighting if fit.stage != "pretrain" else "fixed",
                                len(cfg.tasks) if fit.stage != "pretrain" else 1)
    weighting = weighting.to(next(model.parameters()).device)
    use_threads(cfg, len(train))
    history = _fit(run_dir, fit, model, weighting, train, val, step, cfg, lr, on_epoch)
    summary = _summary(fit.stage, history, fit=fit.name, weights=cast(torch.Tensor, weighting.weights).tolist())
    _save_atomic({"model": model.state_dict(), "summary": summary}, done)
    (run_dir / f"{fit.name}_last.pt").unlink(missing_ok=True)
    return summary


def _skipped(stage: str, why: str) -> dict:
    return {"stage": stage, "epochs_run": 0, "skipped": why}


def _split_sets(part: Part, cfg: TrainConfig, labels: np.ndarray) -> tuple[TensorSet, TensorSet | None]:
    train_units, val_units = validation_split(labels, cfg.val_fraction, cfg.seed)
    val = tensor_set(part, val_units) if len(val_units) else None
    return tensor_set(part, train_units), val


def _single_stage(run_dir: Path, stage: str, cfg: TrainConfig, train: TensorSet | None,
                  val: TensorSet | None, step, lr: float, on_epoch: EpochCallback | None) -> dict:
    """A stage that trains one model from the previous stage's weights (research protocol,
    and pretraining)."""
    saved = _load_stage(run_dir, stage)
    if saved is not None:  # finished before a restart
        return saved["summary"]
    if train is None or len(train) == 0:
        return _skipped(stage, "no units in this stage's partitions")
    prepared = load_prepared(run_dir)
    model = build_model(run_dir, cfg, prepared, before=stage) if stage != "pretrain" else \
        _new_model(cfg, prepared, cfg.seed).to(resolve_device(cfg.device))
    summary = _run_fit(run_dir, Fit(stage, stage), cfg, model, train, val, step, lr, on_epoch)
    # the stage's result is the fit itself: `<stage>.pt` holds the weights and the summary
    return summary


def pretrain(run_dir: Path, cfg: TrainConfig, on_epoch: EpochCallback | None = None) -> dict:
    """Masked feature reconstruction, labels unused: on every training unit (pooled), or on the
    pretrain and ssl units (research)."""
    prepared = load_prepared(run_dir)
    parts = [prepared.parts[p] for p in PRETRAIN_PARTITIONS[cfg.protocol] if len(prepared.parts[p])]
    pairs = [_split_sets(p, cfg, np.zeros(len(p), np.int64)) for p in parts]
    train = concat_sets([t for t, _ in pairs]) if pairs else None
    vals = [v for _, v in pairs if v is not None]
    return _single_stage(run_dir, "pretrain", cfg, train, concat_sets(vals) if vals else None,
                         _pretrain_step(cfg.mask_rate), cfg.lr, on_epoch)


def supervised(run_dir: Path, cfg: TrainConfig, on_epoch: EpochCallback | None = None) -> dict:
    """Multitask training: an ensemble on every labelled training unit (pooled), or one model on
    the classifier partition (research)."""
    if cfg.pooled:
        return _supervised_pooled(run_dir, cfg, on_epoch)
    part = load_prepared(run_dir).parts["classifier"]
    train, val = _split_sets(part, cfg, part.emotion) if len(part) else (None, None)
    return _single_stage(run_dir, "supervised", cfg, train, val, _supervised_step(), cfg.lr, on_epoch)


def _pooled_step(cfg: TrainConfig, part: Part, n_classes: int):
    """The pooled protocol's supervised step: balanced class weights from `part`'s emotions (when
    `cfg.class_weights`) and label smoothing."""
    weight = class_weights(torch.from_numpy(part.emotion), n_classes) if cfg.class_weights else None
    return _supervised_step(weight, cfg.label_smoothing)


def _regularised(cfg: TrainConfig, weight_decay: float, dropout: float) -> TrainConfig:
    return replace(cfg, weight_decay=weight_decay, dropout=dropout)


def _save_members(run_dir: Path, stage: str, cfg: TrainConfig, members: list[tuple[torch.nn.Module, dict]],
                  history: list[dict], **extra) -> dict:
    """`<stage>.pt`: the members' weights (one model, or an ensemble of several), the weight
    decay and dropout they were trained with, and the stage's summary."""
    prepared = load_prepared(run_dir)
    if len(members) == 1:
        model: torch.nn.Module = members[0][0]
    else:
        model = EnsembleModel(model_config(cfg, prepared), len(members))
        for target, (member, _) in zip(model.members, members, strict=True):
            target.load_state_dict(member.state_dict())
    summary = _summary(stage, history, members=len(members), **extra)
    summary["best_val_loss"] = float(np.mean([s["best_val_loss"] for _, s in members if s.get("best_val_loss")]
                                             or [np.nan]))
    _save_atomic({"model": model.state_dict(), "members": len(members) if len(members) > 1 else None,
                  "regularisation": {"weight_decay": cfg.weight_decay, "dropout": cfg.dropout},
                  "summary": summary}, run_dir / f"{stage}.pt")
    return summary


def _supervised_pooled(run_dir: Path, cfg: TrainConfig, on_epoch: EpochCallback | None) -> dict:
    """Member 0 once per (weight decay, dropout) candidate, on fold 0; the candidate with the lowest
    validation loss is kept and the other members train with it on their own folds."""
    saved = _load_stage(run_dir, "supervised")
    if saved is not None:
        return saved["summary"]
    prepared = load_prepared(run_dir)
    part = labelled_units(prepared, ("finetune",) if cfg.personalise else ())
    folds = member_folds(part.emotion, cfg.ensemble, cfg.val_fraction, cfg.seed)
    step = _pooled_step(cfg, part, len(prepared.emotions))

    def train_member(k: int, name: str, member_cfg: TrainConfig) -> tuple[torch.nn.Module, dict]:
        fit = Fit("supervised", name, k)
        model = _start_model(run_dir, member_cfg, prepared, fit, member_cfg.dropout)
        train_units, val_units = folds[k]
        val = tensor_set(part, val_units) if len(val_units) else None
        return model, _run_fit(run_dir, fit, member_cfg, model, tensor_set(part, train_units), val, step,
                               member_cfg.lr, on_epoch)

    candidates = REGULARISATION if cfg.select_regularisation else ((cfg.weight_decay, cfg.dropout),)
    single = len(candidates) == 1 and len(folds) == 1  # one fit: named like the stage, as in research
    trials = [train_member(0, "supervised" if single else f"supervised-c{i}", _regularised(cfg, *c))
              for i, c in enumerate(candidates)]
    losses = [t[1].get("best_val_loss") for t in trials]
    best = int(np.argmin([np.inf if v is None else v for v in losses]))
    chosen = _regularised(cfg, *candidates[best])
    members = [trials[best]]
    for k in range(1, len(folds)):
        if cfg.deadline and time.time() > cfg.deadline:
            break  # out of time: the members trained so far make the ensemble
        members.append(train_member(k, f"supervised-m{k}", chosen))
    history = [h for _, s in [*trials, *members[1:]] for h in s.get("history", [])]
    tried = [{"weight_decay": c[0], "dropout": c[1], "val_loss": v} for c, v in zip(candidates, losses, strict=True)]
    return _save_members(run_dir, "supervised", chosen, members, history, regularisation_tried=tried,
                         weight_decay=chosen.weight_decay, dropout=chosen.dropout, units=len(part))


def pseudo_label(run_dir: Path, cfg: TrainConfig) -> dict:
    """Research protocol: label ssl units whose predicted emotion probability reaches the
    threshold; fine-tuning then trains on them (emotion only: their other labels are never used)."""
    prepared = load_prepared(run_dir)
    ssl = prepared.parts["ssl"]
    if cfg.pooled:
        return {"pseudo_labelled": 0, "ssl_units": len(ssl), "skipped": "pooled protocol: ssl labels are used"}
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
    """Continue training at a lower learning rate, early-stopped on a slice of the finetune units:
    research: on the finetune partition plus the pseudo-labelled ssl units; pooled with
    `personalise`: each member on the finetune partition (without, it trained with the others)."""
    if cfg.pooled:
        return _finetune_pooled(run_dir, cfg, on_epoch)
    prepared = load_prepared(run_dir)
    part = prepared.parts["finetune"]
    sets, val = [], None
    if len(part):
        train, val = _split_sets(part, cfg, part.emotion)
        sets.append(train)
    pseudo = _pseudo_set(run_dir, prepared.parts["ssl"])
    if pseudo is not None:
        sets.append(pseudo)
    return _single_stage(run_dir, "finetune", cfg, concat_sets(sets) if sets else None, val, _supervised_step(),
                         cfg.lr * cfg.finetune_lr_factor, on_epoch)


def _finetune_pooled(run_dir: Path, cfg: TrainConfig, on_epoch: EpochCallback | None) -> dict:
    if not cfg.personalise:
        return _skipped("finetune", "pooled protocol: the finetune partition trained with the others "
                        "(personalise to fine-tune on it instead)")
    saved = _load_stage(run_dir, "finetune")
    if saved is not None:
        return saved["summary"]
    prepared = load_prepared(run_dir)
    part = prepared.parts["finetune"]
    supervised_stage = _load_stage(run_dir, "supervised")
    if not len(part) or supervised_stage is None:
        return _skipped("finetune", "no finetune units" if not len(part) else "no supervised stage to fine-tune")
    chosen = _regularised(cfg, **supervised_stage["regularisation"])
    model = build_model(run_dir, chosen, prepared, before="finetune")
    members = list(model.members) if isinstance(model, EnsembleModel) else [model]
    train, val = _split_sets(part, cfg, part.emotion)
    step = _pooled_step(cfg, part, len(prepared.emotions))
    done = [(m, _run_fit(run_dir, Fit("finetune", f"finetune-m{k}", k), chosen, m, train, val, step,
                         cfg.lr * cfg.finetune_lr_factor, on_epoch)) for k, m in enumerate(members)]
    history = [h for _, s in done for h in s.get("history", [])]
    return _save_members(run_dir, "finetune", chosen, done, history, units=len(part))


def finish_run(run_dir: Path, cfg: TrainConfig, results: dict) -> Path:
    """Write the self-contained checkpoint `model.pt` (final weights + metrics)."""
    prepared = load_prepared(run_dir)
    model = build_model(run_dir, cfg, prepared)
    source = stage_file(run_dir)
    saved = torch.load(source, map_location="cpu", weights_only=True) if source else {}
    extra = {"train_config": cfg.to_dict(), "extractors": prepared.extractors,
             "stage": source.stem if source else None, "protocol": prepared.protocol,
             "labelled_partitions": list(prepared.labelled), "features": prepared.features,
             "regularisation": saved.get("regularisation")}
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
    units = info.get("units", {})
    return {
        "run_id": run_id, "split_id": info.get("split_id") or "unknown",
        "status": "failed" if error else "completed", "started_at": started_at, "finished_at": finished_at,
        "params": params_json, "encoder": cfg.encoder, "loss_weighting": cfg.loss_weighting,
        "stages": ",".join(s["stage"] for s in stages if s.get("epochs_run")),
        "tasks": ",".join(cfg.tasks), "device": str(resolve_device(cfg.device)) if not error else cfg.device,
        "extractor": ",".join(info.get("extractors", [])) or None, "n_features": info.get("n_features", 0),
        "train_units": info.get("labelled_units", sum(v for k, v in units.items() if k != "test")),
        "test_units": units.get("test", 0),
        "epochs_run": sum(s.get("epochs_run", 0) for s in stages),
        "frames_per_s": throughput(stages),
        "checkpoint": str(checkpoint) if checkpoint else "", "contract_version": CONTRACT_VERSION,
        "error": error,
    }
