"""Task losses that skip missing labels: emotion -1, stress -1, valence/arousal NaN.

Every loss returns a scalar that is 0 (with a graph) when a batch has no label for its task,
so a weighting scheme can always sum the task losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _zero(like: torch.Tensor) -> torch.Tensor:
    return like.sum() * 0.0


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over labelled samples; with class `weight`, the weighted mean; with
    `smoothing`, against targets that give that much probability mass to the classes evenly."""
    keep = target >= 0
    if not keep.any():
        return _zero(logits)
    return F.cross_entropy(logits[keep], target[keep], weight=weight, label_smoothing=smoothing)


def binary_cross_entropy(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logit = logit.reshape(-1)
    keep = target >= 0
    if not keep.any():
        return _zero(logit)
    return F.binary_cross_entropy_with_logits(logit[keep], target[keep].to(logit.dtype))


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    keep = ~torch.isnan(target)
    if not keep.any():
        return _zero(pred)
    return F.mse_loss(pred[keep], target[keep])


def ccc(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Lin's concordance correlation coefficient of two 1-D tensors."""
    pm, tm = pred.mean(), target.mean()
    pv, tv = pred.var(unbiased=False), target.var(unbiased=False)
    cov = ((pred - pm) * (target - tm)).mean()
    return 2 * cov / (pv + tv + (pm - tm) ** 2 + eps)


def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over output columns of 1 - CCC, on rows whose target is present (needs 2+ rows)."""
    losses = []
    for j in range(pred.shape[1]):
        keep = ~torch.isnan(target[:, j])
        if keep.sum() >= 2:
            losses.append(1.0 - ccc(pred[keep, j], target[keep, j]))
    if not losses:
        return _zero(pred)
    return torch.stack(losses).mean()


def valence_arousal_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE plus CCC loss: MSE anchors the scale, CCC rewards agreement across samples."""
    return mse(pred, target) + ccc_loss(pred, target)


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """MSE on the masked feature entries only."""
    if not where.any():
        return _zero(pred)
    return F.mse_loss(pred[where], target[where])
