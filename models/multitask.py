"""The multitask model: one shared encoder, one head per enabled task, and a reconstruction
head used by self-supervised pretraining (masked feature reconstruction)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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

    def __post_init__(self) -> None:
        unknown = set(self.tasks) - set(TASKS)
        if unknown or not self.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks}")

    def to_dict(self) -> dict:
        return {**asdict(self), "tasks": list(self.tasks)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(**{**data, "tasks": tuple(data["tasks"])})


class MultiTaskModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder: Encoder = build_encoder(config.encoder, config.n_features, config.hidden,
                                              config.layers, config.window, config.dropout)
        dim = self.encoder.out_dim
        builders = {
            "emotion": lambda: emotion_head(dim, config.n_emotions),
            "stress": lambda: stress_head(dim),
            "valence_arousal": lambda: valence_arousal_head(dim),
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


def task_losses(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """One loss per task in the outputs' order; labels missing for a sample are skipped."""
    table = {
        "emotion": losses.cross_entropy,
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
