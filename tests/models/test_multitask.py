"""The multitask model can overfit a tiny set, and pretraining reconstruction can learn."""

from __future__ import annotations

import pytest
import torch

from models.heads import BoundedHead
from models.multitask import EnsembleModel, ModelConfig, MultiTaskModel, pretrain_loss, task_losses

torch.set_num_threads(1)


def _tiny_set():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 4, 8, generator=g)
    mask = torch.ones(12, 4, dtype=torch.bool)
    targets = {"emotion": torch.arange(12) % 3, "stress": torch.arange(12) % 2,
               "valence_arousal": torch.rand(12, 2, generator=g) * 3}
    return x, mask, targets


@pytest.mark.parametrize("kind", ["linear", "mlp", "transformer"])
def test_overfits_a_tiny_set(kind: str) -> None:
    torch.manual_seed(0)
    x, mask, targets = _tiny_set()
    model = MultiTaskModel(ModelConfig(kind, 8, 3, window=4, hidden=32, dropout=0.0, va_range=(0.0, 3.0)))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = torch.stack(task_losses(model(x, mask), targets)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final = [v.item() for v in task_losses(model.eval()(x, mask), targets)]
    assert final[0] < 0.05 and final[1] < 0.05  # emotion and stress cross-entropy
    assert final[2] < 0.15  # valence/arousal MSE + (1 - CCC)


def test_masked_reconstruction_learns() -> None:
    torch.manual_seed(0)
    base = torch.randn(64, 1, 1)
    x = base.repeat(1, 4, 6) + 0.05 * torch.randn(64, 4, 6)  # features are redundant copies
    mask = torch.ones(64, 4, dtype=torch.bool)
    model = MultiTaskModel(ModelConfig("mlp", 6, 2, window=4, hidden=32, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = pretrain_loss(model, x, mask, 0.3).item()
    for _ in range(200):
        loss = pretrain_loss(model, x, mask, 0.3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert pretrain_loss(model.eval(), x, mask, 0.3).item() < 0.2 * first


def test_config_round_trip_and_bad_tasks() -> None:
    config = ModelConfig("mlp", 5, 2, tasks=("emotion",))
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert list(MultiTaskModel(config)(torch.zeros(1, 16, 5), torch.ones(1, 16, dtype=torch.bool))) == ["emotion"]
    with pytest.raises(ValueError):
        ModelConfig("mlp", 5, 2, tasks=("mood",))


def test_bounded_head_stays_in_its_range_and_starts_at_the_midpoint() -> None:
    torch.manual_seed(0)
    head = BoundedHead(4, 2, 0.0, 3.0, dropout=0.0).eval()
    out = head(torch.randn(64, 4) * 1e4)
    assert bool((out >= 0).all() and (out <= 3).all())
    torch.nn.init.zeros_(head.net[-1].weight)
    torch.nn.init.zeros_(head.net[-1].bias)
    assert torch.allclose(head(torch.randn(3, 4)), torch.full((3, 2), 1.5))
    with pytest.raises(ValueError, match="low < high"):
        BoundedHead(4, 2, 3.0, 0.0)


def test_an_ensemble_answers_with_its_members_mean_probabilities() -> None:
    torch.manual_seed(0)
    config = ModelConfig("linear", 6, 3, window=2, hidden=8, dropout=0.0, va_range=(0.0, 3.0))
    ensemble = EnsembleModel(config, 3).eval()
    x, mask = torch.randn(5, 2, 6), torch.ones(5, 2, dtype=torch.bool)
    with torch.no_grad():
        outs = [m(x, mask) for m in ensemble.members]
        mean = ensemble(x, mask)
    probs = torch.stack([torch.softmax(o["emotion"], -1) for o in outs]).mean(0)
    assert torch.allclose(torch.softmax(mean["emotion"], -1), probs, atol=1e-6)
    stress = torch.stack([torch.sigmoid(o["stress"]) for o in outs]).mean(0)
    assert torch.allclose(torch.sigmoid(mean["stress"]), stress, atol=1e-6)
    va = torch.stack([o["valence_arousal"] for o in outs]).mean(0)
    assert torch.allclose(mean["valence_arousal"], va)
    assert ModelConfig.from_dict(config.to_dict()) == config
