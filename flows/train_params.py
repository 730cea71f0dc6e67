"""The train flow's parameters (the train/default run form), importable without Prefect or torch,
so that `affectflow train` checks what was typed before either loads."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from tasks import train as tr

__all__ = ["Device", "Encoder", "Extractor", "LossWeighting", "Protocol", "Task", "TrainParams"]


class Protocol(StrEnum):
    pooled = "pooled"
    research = "research"


class Encoder(StrEnum):
    linear = "linear"
    mlp = "mlp"
    transformer = "transformer"


class Extractor(StrEnum):
    mediapipe = "mediapipe"
    openface_csv = "openface-csv"
    pyfeat = "pyfeat"


class LossWeighting(StrEnum):
    fixed = "fixed"
    uncertainty = "uncertainty"
    gradnorm = "gradnorm"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Task(StrEnum):
    emotion = "emotion"
    stress = "stress"
    valence_arousal = "valence_arousal"


class TrainParams(BaseModel):
    """Training: which split and protocol, the model, and how long to train."""

    model_config = ConfigDict(extra="forbid")

    split_id: str = Field("current", pattern=r"^[A-Za-z0-9_.=:-]{1,200}$",
                          description="Split version to train on (see `affectflow splits`); current: the latest published one, e.g. current")
    protocol: Protocol = Field(Protocol.pooled, description="pooled: pretrain on every training unit, then train "
                               "on every labelled one (ssl + classifier + finetune); research: the research "
                               "pipeline's stages (classifier only, pseudo-labels, finetune); e.g. pooled")
    extractor: Extractor | None = Field(None, description="Train on this extractor's units only; needed when "
                                        "the split mixes extractors (one model per extractor). Empty: the "
                                        "split's only extractor; e.g. mediapipe")
    pretrain: bool = Field(True, description="Self-supervised pretraining (masked feature reconstruction), labels unused, e.g. true")
    supervised: bool = Field(True, description="Supervised multitask training (emotion, stress, valence-arousal), e.g. true")
    pseudo_labels: bool = Field(True, description="research protocol: pseudo-label ssl units above the threshold "
                                "for fine-tuning, e.g. true")
    finetune: bool = Field(True, description="Fine-tuning on the finetune partition (research; pooled only with "
                           "personalise), e.g. true")
    personalise: bool = Field(False, description="pooled protocol: keep the finetune partition out of the "
                              "supervised stage and fine-tune each member on it (personalisation), e.g. false")
    encoder: Encoder = Field(Encoder.linear, description="Shared encoder: linear (a projection; the heads add "
                             "the non-linearity), mlp, or transformer (attention over a window's frames); e.g. linear")
    ensemble: int = Field(5, ge=1, le=20, description="pooled protocol: models averaged (1-20), each validated on its "
                          "own fold of the labelled training units (1: one model, 20% validation slice); e.g. 5")
    select_regularisation: bool = Field(True, description="pooled protocol: choose weight decay and dropout "
                                        "(1e-4/0.1, 1e-2/0.3, 1e-1/0.5) by validation loss; off: the values below; e.g. true")
    class_weights: bool = Field(True, description="pooled protocol: weight emotion classes inversely to their "
                                "number of training units, e.g. true")
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="pooled protocol: label smoothing of the "
                                   "emotion loss in training (0-1; validation loss unsmoothed, so early stopping "
                                   "does not halt when the net only grows confident); 0: off; e.g. 0.1")
    epochs: int = Field(200, ge=1, le=5000, description="Most epochs per fit (1-5000; early stopping usually ends sooner), e.g. 200")
    batch_size: int = Field(64, ge=1, le=8192, description="Windows per batch (windows, 1-8192), e.g. 64")
    learning_rate: float = Field(3e-3, gt=0, le=1.0, description="AdamW learning rate (per step, 0-1; the default is TrainConfig.lr, tested), e.g. 0.003")
    weight_decay: float = Field(1e-2, ge=0, le=1.0, description="AdamW weight decay (0-1, when not selected by validation), e.g. 0.01")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout in encoder and heads (0-1, when not selected by validation), e.g. 0.1")
    loss_weighting: LossWeighting = Field(LossWeighting.fixed, description="How the task losses are combined: fixed weights, uncertainty (learned), gradnorm, e.g. fixed")
    tasks: list[Task] = Field(default_factory=lambda: list(Task), min_length=1, description="Tasks trained (heads of the model), e.g. [emotion, stress]")
    pseudo_label_threshold: float = Field(0.6, ge=0.0, le=1.0, description="Least predicted probability (0-1) for a pseudo-label, e.g. 0.6")
    window: int = Field(16, ge=1, le=512, description="Frames per window (frames, 1-512; units of one frame, images, use 1), e.g. 16")
    hidden: int = Field(64, ge=8, le=2048, description="Encoder width (units per layer, 8-2048), e.g. 64")
    patience: int = Field(20, ge=1, le=1000, description="Epochs without validation improvement before a fit stops (epochs), e.g. 20")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Random seed of folds, weights and batches (integer), e.g. 0")
    max_minutes: float = Field(60.0, gt=0, le=7 * 24 * 60, description="Training stops after this many minutes (minutes, up to 10080), e.g. 60")
    device: Device = Field(Device.auto, description="Where to train: auto (the GPU when there is one), cpu or cuda, e.g. auto")
    threads: int = Field(0, ge=0, le=1024, description="CPU threads; 0: one for fits under 20,000 windows "
                         "(small models gain nothing from more, and lose much on shared cores), else all; e.g. 0")
    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,100}$",
                               description="Resume this earlier run (its directory under runs/) instead of starting a new one, e.g. "
                               "train-20260101-120000-ab12cd; empty: a new run")

    @model_validator(mode="after")
    def _trains_something(self) -> TrainParams:
        if not (self.supervised or self.finetune):
            raise ValueError("enable at least one of the supervised and finetune stages")
        if self.protocol is Protocol.pooled and not self.supervised:
            raise ValueError("the pooled protocol trains in its supervised stage; keep it on (or use protocol research)")
        return self

    def train_config(self, deadline: float | None = None) -> tr.TrainConfig:
        from tasks import train as tr  # torch: only when a run starts

        return tr.TrainConfig(
            protocol=self.protocol.value, encoder=self.encoder.value, hidden=self.hidden, window=self.window,
            epochs=self.epochs, batch_size=self.batch_size, lr=self.learning_rate,
            weight_decay=self.weight_decay, dropout=self.dropout, loss_weighting=self.loss_weighting.value,
            tasks=tuple(t.value for t in Task if t in self.tasks), patience=self.patience,
            pseudo_threshold=self.pseudo_label_threshold, ensemble=self.ensemble,
            select_regularisation=self.select_regularisation, class_weights=self.class_weights,
            label_smoothing=self.label_smoothing, personalise=self.personalise, extractor=self.extractor.value if self.extractor else None,
            seed=self.seed, device=self.device.value, threads=self.threads, deadline=deadline)
