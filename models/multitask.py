"""The multitask model: one shared encoder, one head per enabled task, and a reconstruction
head used by self-supervised pretraining (masked feature reconstruction). `EnsembleModel`
averages several of them (trained on different folds) and answers like one."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import cast

import torch
from torch import nn

from models import losses
from models.encoders import Encoder, build_encoder
from models.heads import ReconstructionHead, emotion_head, stress_head, valence_arousal_head

TASKS = ("emotion", "stress", "valence_arousal")


@dataclass(frozen=True)
class ModelConfig:
    encoder: str
    n_features: int
    n_emotions: int
    tasks: tuple[str, ...] = TASKS
    hidden: int = 64
    layers: int = 2
    window: int = 16
    dropout: float = 0.1
    # the valence/arousal label range; None (checkpoints from before bounded heads): unbounded
    va_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.tasks) - set(TASKS)
        if unknown or not self.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks}")

    def to_dict(self) -> dict:
        return {**asdict(self), "tasks": list(self.tasks),
                "va_range": None if self.va_range is None else list(self.va_range)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        bounds = data.get("va_range")
        return cls(**{**data, "tasks": tuple(data["tasks"]),
                      "va_range": None if bounds is None else (float(bounds[0]), float(bounds[1]))})


class MultiTaskModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder: Encoder = build_encoder(config.encoder, config.n_features, config.hidden,
                                              config.layers, config.window, config.dropout)
        dim = self.encoder.out_dim
        builders = {
            "emotion": lambda: emotion_head(dim, config.n_emotions, config.dropout),
            "stress": lambda: stress_head(dim, config.dropout),
            "valence_arousal": lambda: valence_arousal_head(dim, config.va_range, config.dropout),
        }
        self.heads = nn.ModuleDict({t: builders[t]() for t in config.tasks})
        self.reconstruct_head = ReconstructionHead(dim, config.n_features)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encoder(x, mask)
        return {task: head(z) for task, head in self.heads.items()}

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.reconstruct_head(self.encoder.frames(x, mask))

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.encoder.parameters() if p.requires_grad]


class EnsembleModel(nn.Module):
    """Members of one config whose outputs are averaged: emotion and stress probabilities (returned
    as the logits of the mean, so a softmax or sigmoid of the output gives the mean probability),
    valence/arousal values. Reconstruction and shared parameters are the first member's."""

    def __init__(self, config: ModelConfig, members: int):
        super().__init__()
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member, got {members}")
        self.config = config
        self.members = nn.ModuleList(MultiTaskModel(config) for _ in range(members))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return average_outputs([member(x, mask) for member in self.members])

    def _member(self, k: int) -> MultiTaskModel:
        return cast(MultiTaskModel, self.members[k])  # ModuleList indexing is typed as plain Module

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._member(0).reconstruct(x, mask)

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for k in range(len(self.members)) for p in self._member(k).shared_parameters()]


def average_outputs(outputs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean prediction of several models, in the models' own output form (logits)."""
    if len(outputs) == 1:
        return outputs[0]
    eps = 1e-7
    mean = {}
    for task in outputs[0]:
        stacked = torch.stack([o[task] for o in outputs])
        if task == "emotion":
            mean[task] = torch.log(torch.softmax(stacked, -1).mean(0).clamp_min(eps))
        elif task == "stress":
            mean[task] = torch.logit(torch.sigmoid(stacked).mean(0), eps=eps)
        else:
            mean[task] = stacked.mean(0)
    return mean


def task_losses(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                class_weight: torch.Tensor | None = None, smoothing: float = 0.0) -> list[torch.Tensor]:
    """One loss per task in the outputs' order; labels missing for a sample are skipped.
    `class_weight` weights the emotion classes (balanced weights for skewed classes);
    `smoothing` is the emotion loss's label smoothing."""
    table = {
        "emotion": lambda out, t: losses.cross_entropy(out, t, class_weight, smoothing),
        "stress": losses.binary_cross_entropy,
        "valence_arousal": losses.valence_arousal_loss,
    }
    return [table[task](out, targets[task]) for task, out in outputs.items()]


def mask_features(x: torch.Tensor, mask: torch.Tensor, rate: float,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero a random `rate` of the feature entries of valid frames (zero is the training mean
    after normalisation). Returns the masked input and where it was masked."""
    noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
    where = (noise < rate) & mask.unsqueeze(-1)
    return x.masked_fill(where, 0.0), where


def pretrain_loss(model: MultiTaskModel, x: torch.Tensor, mask: torch.Tensor, rate: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    masked, where = mask_features(x, mask, rate, generator)
    return losses.reconstruction_loss(model.reconstruct(masked, mask), x, where)
