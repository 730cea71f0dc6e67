"""Combining task losses into one: fixed weights, uncertainty weighting, GradNorm.

Every scheme is called as `scheme(losses, shared)` with a list of scalar task losses and the
shared parameters, and returns the total loss to back-propagate.
- Fixed: sum of w_i * L_i with constant w.
- Uncertainty (Kendall, Gal & Cipolla 2018): sum of exp(-s_i) L_i + s_i, the log-variances s_i
  learned with the model (they are parameters of this module; give them to the optimiser).
- GradNorm (Chen et al. 2018): weights w_i (summing to the number of tasks) moved by their own
  optimiser so that each task's gradient norm on the shared parameters tracks
  mean norm * (relative inverse training rate)^alpha. A task whose loss falls more slowly than the
  others gets a larger weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FixedWeighting(nn.Module):
    weights: torch.Tensor  # buffer registered in __init__

    def __init__(self, n_tasks: int, weights: Sequence[float] | None = None):
        super().__init__()
        w = torch.tensor(list(weights) if weights is not None else [1.0] * n_tasks)
        self.register_buffer("weights", w)

    def forward(self, losses: Sequence[torch.Tensor], shared: Sequence[nn.Parameter] = ()) -> torch.Tensor:
        return (self.weights * torch.stack(list(losses))).sum()


class UncertaintyWeighting(nn.Module):
    """Kendall et al. 2018: learned log-variances. `lr` is their own learning rate: at the model's
    (1e-3) they move about 1e-3 per step, so the short runs of small data sets end with weights
    within 0.1% of 1, i.e. fixed weighting (measured on openface-labelled)."""

    def __init__(self, n_tasks: int, lr: float = 0.025):
        super().__init__()
        self.log_vars: nn.Parameter = nn.Parameter(torch.zeros(n_tasks))
        self.lr = lr

    @property
    def weights(self) -> torch.Tensor:
        return torch.exp(-self.log_vars).detach()

    def forward(self, losses: Sequence[torch.Tensor], shared: Sequence[nn.Parameter] = ()) -> torch.Tensor:
        stacked = torch.stack(list(losses))
        return (torch.exp(-self.log_vars) * stacked + self.log_vars).sum()


class GradNorm(nn.Module):
    initial: torch.Tensor  # buffer registered in __init__

    def __init__(self, n_tasks: int, alpha: float = 1.5, lr: float = 0.025):
        super().__init__()
        self.alpha = alpha
        self.weights: nn.Parameter = nn.Parameter(torch.ones(n_tasks), requires_grad=False)
        self.register_buffer("initial", torch.full((n_tasks,), float("nan")))
        self.lr = lr

    def _grad_norms(self, losses: Sequence[torch.Tensor], shared: Sequence[nn.Parameter]) -> torch.Tensor:
        norms = []
        for loss in losses:
            if not loss.requires_grad:
                norms.append(torch.zeros((), device=self.weights.device))
                continue
            grads = torch.autograd.grad(loss, list(shared), retain_graph=True, allow_unused=True)
            flat = [g.reshape(-1) for g in grads if g is not None]
            norms.append(torch.cat(flat).norm() if flat else torch.zeros((), device=self.weights.device))
        return torch.stack(norms).detach()

    def update(self, losses: Sequence[torch.Tensor], shared: Sequence[nn.Parameter]) -> None:
        """One GradNorm step on the weights (only tasks with a gradient this batch take part)."""
        values = torch.stack([loss.detach() for loss in losses])
        fresh = torch.isnan(self.initial) & (values > 0)
        self.initial[fresh] = values[fresh]
        norms = self._grad_norms(losses, shared)
        active = (norms > 0) & ~torch.isnan(self.initial)
        if active.sum() < 2:
            return
        w = self.weights.detach().clone().requires_grad_(True)
        g = w[active] * norms[active]
        ratio = values[active] / self.initial[active]
        target = (g.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
        (grad,) = torch.autograd.grad((g - target).abs().sum(), w)
        with torch.no_grad():
            new = (self.weights - self.lr * grad).clamp(min=1e-3)
            self.weights.copy_(new * len(new) / new.sum())

    def forward(self, losses: Sequence[torch.Tensor], shared: Sequence[nn.Parameter] = ()) -> torch.Tensor:
        if self.training and shared:
            self.update(losses, shared)
        return (self.weights.detach() * torch.stack(list(losses))).sum()


WEIGHTINGS = ("fixed", "uncertainty", "gradnorm")


def build_weighting(kind: str, n_tasks: int) -> nn.Module:
    if kind == "fixed":
        return FixedWeighting(n_tasks)
    if kind == "uncertainty":
        return UncertaintyWeighting(n_tasks)
    if kind == "gradnorm":
        return GradNorm(n_tasks)
    raise ValueError(f"unknown loss weighting {kind!r}; known: {', '.join(WEIGHTINGS)}")
