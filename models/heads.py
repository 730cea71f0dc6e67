"""Task heads on the pooled encoder output, and the reconstruction head for pretraining."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn


class Head(nn.Module):
    """A small MLP from the shared representation to one task's outputs."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, out_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def emotion_head(in_dim: int, n_classes: int) -> Head:
    """Logits over the emotion classes."""
    return Head(in_dim, n_classes)


def stress_head(in_dim: int) -> Head:
    """One logit: stressed (1) or not (0)."""
    return Head(in_dim, 1)


VA_MIDPOINT = 1.5  # middle of the label scale 0-3


def valence_arousal_head(in_dim: int) -> Head:
    """Two outputs: valence and arousal (label scale 0-3). The output bias starts at the scale's
    midpoint so early training fits the spread rather than the offset."""
    head = Head(in_dim, 2)
    output = cast(nn.Linear, head.net[-1])  # Sequential indexing is typed as plain Module
    nn.init.constant_(output.bias, VA_MIDPOINT)
    return head


class ReconstructionHead(nn.Module):
    """Per-frame states back to the input features (masked feature reconstruction)."""

    def __init__(self, in_dim: int, n_features: int):
        super().__init__()
        self.net = nn.Linear(in_dim, n_features)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states)
