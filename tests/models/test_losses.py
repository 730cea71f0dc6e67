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


def test_label_smoothing_keeps_a_confident_right_answer_costly() -> None:
    logits = torch.tensor([[12.0, 0.0, 0.0], [0.0, 12.0, 0.0], [0.0, 0.0, 0.0]])
    target = torch.tensor([0, 1, -1])  # the third is unlabelled: skipped either way
    plain = losses.cross_entropy(logits, target)
    smoothed = losses.cross_entropy(logits, target, smoothing=0.1)
    assert plain.item() < 1e-4  # plain cross-entropy rewards growing the logits without end
    # smoothed: 0.9 + 0.1/3 on the right class, 0.1/3 on each other one; big logits now cost
    log_p = torch.log_softmax(logits[:2], -1)
    expected = -((0.9 + 0.1 / 3) * log_p[[0, 1], [0, 1]] + 0.1 / 3 * (log_p.sum(1) - log_p[[0, 1], [0, 1]]))
    assert torch.isclose(smoothed, expected.mean(), atol=1e-5) and smoothed.item() > 0.5
