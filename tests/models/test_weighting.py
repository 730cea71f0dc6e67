"""Loss weighting: GradNorm raises the weight of the task that learns slowly."""

from __future__ import annotations

import torch
from torch import nn

from models.weighting import FixedWeighting, GradNorm, UncertaintyWeighting, build_weighting

torch.set_num_threads(1)


def test_gradnorm_favours_the_task_that_does_not_learn() -> None:
    """Two tasks on one shared layer: `easy` is a linear function of the input, `noise` is
    unlearnable noise. Easy's loss falls fast, so GradNorm must move weight to noise."""
    torch.manual_seed(0)
    x = torch.randn(256, 6)
    easy_y = x @ torch.randn(6, 1)
    noise_y = torch.randn(256, 1)
    shared, easy_head, noise_head = nn.Linear(6, 16), nn.Linear(16, 1), nn.Linear(16, 1)
    weighting = GradNorm(2, alpha=1.5, lr=0.05).train()
    params = [*shared.parameters(), *easy_head.parameters(), *noise_head.parameters()]
    optimizer = torch.optim.Adam(params, lr=0.02)
    for _ in range(150):
        h = shared(x)
        task = [nn.functional.mse_loss(easy_head(h), easy_y), nn.functional.mse_loss(noise_head(h), noise_y)]
        total = weighting(task, list(shared.parameters()))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    easy_w, noise_w = weighting.weights.tolist()
    assert noise_w > 1.2 > 0.8 > easy_w
    assert abs(easy_w + noise_w - 2.0) < 1e-4  # renormalised to the number of tasks


def test_gradnorm_weights_do_not_move_in_eval_mode() -> None:
    weighting = GradNorm(2).eval()
    p = nn.Parameter(torch.ones(3))
    weighting([p.sum(), (p * 3).sum()], [p])
    assert weighting.weights.tolist() == [1.0, 1.0]


def test_uncertainty_weighting_learns_log_variances() -> None:
    weighting = UncertaintyWeighting(2)
    total = weighting([torch.tensor(2.0), torch.tensor(0.5)])
    total.backward()
    # d/ds (exp(-s) L + s) at s = 0 is 1 - L: negative for the larger loss (its variance grows)
    assert weighting.log_vars.grad.tolist() == [-1.0, 0.5]


def test_fixed_and_factory() -> None:
    assert FixedWeighting(2, [1.0, 3.0])([torch.tensor(1.0), torch.tensor(2.0)]).item() == 7.0
    assert isinstance(build_weighting("gradnorm", 3), GradNorm)
