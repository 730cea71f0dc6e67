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


def emotion_head(in_dim: int, n_classes: int, dropout: float = 0.1) -> Head:
    """Logits over the emotion classes."""
    return Head(in_dim, n_classes, dropout=dropout)


def stress_head(in_dim: int, dropout: float = 0.1) -> Head:
    """One logit: stressed (1) or not (0)."""
    return Head(in_dim, 1, dropout=dropout)


VA_MIDPOINT = 1.5  # middle of the label scale 0-3


class BoundedHead(Head):
    """A head whose outputs stay inside [low, high]: a sigmoid scaled to the label range, so a
    prediction can never leave the scale (unbounded heads predicted arousal -13.6 on 0-3). The
    output bias starts at 0, i.e. at the range's midpoint."""

    def __init__(self, in_dim: int, out_dim: int, low: float, high: float, hidden: int = 64,
                 dropout: float = 0.1):
        super().__init__(in_dim, out_dim, hidden, dropout)
        if not high > low:
            raise ValueError(f"a bounded head needs low < high, got [{low}, {high}]")
        self.low, self.high = float(low), float(high)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.low + (self.high - self.low) * torch.sigmoid(self.net(z))


def valence_arousal_head(in_dim: int, bounds: tuple[float, float] | None = None, dropout: float = 0.1) -> Head:
    """Two outputs: valence and arousal. With `bounds` (the label range) they stay inside it;
    without (checkpoints made before bounds existed) the output bias starts at the 0-3 scale's
    midpoint so early training fits the spread rather than the offset."""
    if bounds is not None:
        return BoundedHead(in_dim, 2, *bounds, dropout=dropout)
    head = Head(in_dim, 2, dropout=dropout)
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
