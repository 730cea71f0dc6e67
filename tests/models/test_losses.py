"""Task losses: missing labels skipped, CCC of a perfect prediction is one."""

from __future__ import annotations

import math

import torch

from models import losses


def test_missing_labels_are_skipped() -> None:
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]], requires_grad=True)
    only_first = losses.cross_entropy(logits, torch.tensor([0, -1]))
    assert only_first.item() < 0.01
    none = losses.cross_entropy(logits, torch.tensor([-1, -1]))
    assert none.item() == 0.0 and none.requires_grad
    va = losses.mse(torch.zeros(2, 2), torch.tensor([[1.0, math.nan], [math.nan, math.nan]]))
    assert va.item() == 1.0
    assert losses.binary_cross_entropy(torch.zeros(3, 1), torch.tensor([-1, -1, -1])).item() == 0.0


def test_ccc_perfect_and_shifted() -> None:
    target = torch.tensor([0.5, 1.0, 2.0, 2.5])
    assert abs(losses.ccc(target, target).item() - 1.0) < 1e-6
    assert losses.ccc(target + 1.0, target).item() < 0.7  # correlation 1, but a bias costs
    assert abs(losses.ccc_loss(target[:, None].repeat(1, 2), target[:, None].repeat(1, 2)).item()) < 1e-6


def test_reconstruction_loss_only_where_masked() -> None:
    pred, target = torch.zeros(1, 2, 2), torch.tensor([[[1.0, 9.0], [9.0, 9.0]]])
    where = torch.tensor([[[True, False], [False, False]]])
    assert losses.reconstruction_loss(pred, target, where).item() == 1.0
