"""Shared encoders over a window of frames: `(batch, time, features)` + a validity mask.

Each returns per-frame states (for masked-feature reconstruction) and a pooled unit vector (for
the task heads). Padded frames (mask False) never influence the pooled vector.
- `linear`: one linear projection per frame, then the mean: the shallow option. With the task
  heads on top it is a small MLP whose first layer is factorised (projection x head), which
  weight decay pushes towards low rank: what correlated tabular features (hundreds of landmark
  coordinates, a few hundred units) want.
- `mlp`: the projection, then `layers` GELU blocks per frame.
- `transformer`: attention over the frames of a window, for videos.
"""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of `states` (B, T, H) where `mask` (B, T) is True."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class LinearEncoder(nn.Module):
    """A per-frame linear projection, then masked mean pooling over the window."""

    def __init__(self, n_features: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Linear(n_features, hidden)
        self.out_dim: int = hidden

    def frames(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(self.frames(x, mask), mask)


class PooledMLP(nn.Module):
    """A per-frame MLP, then masked mean pooling over the window."""

    def __init__(self, n_features: int, hidden: int = 128, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        blocks: list[nn.Module] = []
        width = n_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.net = nn.Sequential(*blocks)
        self.out_dim: int = hidden

    def frames(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(self.frames(x, mask), mask)


class TemporalTransformer(nn.Module):
    """A small transformer over the frames of a window with learned positions."""

    def __init__(self, n_features: int, hidden: int = 64, layers: int = 2, heads: int = 4,
                 window: int = 16, dropout: float = 0.1):
        super().__init__()
        self.project = nn.Linear(n_features, hidden)
        self.position = nn.Parameter(torch.zeros(1, window, hidden))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden,
                                           dropout=dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.out_dim: int = hidden

    def frames(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        steps = x.shape[1]
        if steps > self.position.shape[1]:
            raise ValueError(f"window of {steps} frames is longer than the model's {self.position.shape[1]}")
        h = self.project(x) + self.position[:, :steps]
        # A window with no valid frame would make attention all -inf (NaN); let it see itself.
        padding = ~mask
        padding[:, 0] &= mask.any(1)
        return self.norm(self.encoder(h, src_key_padding_mask=padding))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(self.frames(x, mask), mask)


ENCODERS = {"linear": LinearEncoder, "mlp": PooledMLP, "transformer": TemporalTransformer}


Encoder = LinearEncoder | PooledMLP | TemporalTransformer


def build_encoder(kind: str, n_features: int, hidden: int, layers: int, window: int,
                  dropout: float) -> Encoder:
    if kind == "linear":
        return LinearEncoder(n_features, hidden)
    if kind == "mlp":
        return PooledMLP(n_features, hidden, layers, dropout)
    if kind == "transformer":
        return TemporalTransformer(n_features, hidden, layers, window=window, dropout=dropout)
    raise ValueError(f"unknown encoder {kind!r}; known: {', '.join(ENCODERS)}")
