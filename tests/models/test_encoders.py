"""One-batch smoke tests for each encoder, and padding that never leaks into the output."""

from __future__ import annotations

import pytest
import torch

from models.encoders import build_encoder
from models.multitask import ModelConfig, MultiTaskModel, task_losses

torch.set_num_threads(1)


@pytest.mark.parametrize("kind", ["linear", "mlp", "transformer"])
def test_one_batch_forward_backward(kind: str) -> None:
    torch.manual_seed(0)
    model = MultiTaskModel(ModelConfig(kind, n_features=10, n_emotions=4, window=6, hidden=16))
    x = torch.randn(5, 6, 10)
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[0, 2:] = False
    targets = {"emotion": torch.tensor([0, 1, 2, 3, -1]), "stress": torch.tensor([1, 0, -1, 1, 0]),
               "valence_arousal": torch.rand(5, 2) * 3}
    out = model(x, mask)
    assert out["emotion"].shape == (5, 4)
    assert out["stress"].shape == (5, 1)
    assert out["valence_arousal"].shape == (5, 2)
    loss = torch.stack(task_losses(out, targets)).sum()
    loss.backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert torch.isfinite(loss)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.reconstruct(x, mask).shape == x.shape


@pytest.mark.parametrize("kind", ["linear", "mlp", "transformer"])
def test_padded_frames_do_not_change_the_output(kind: str) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(kind, 7, 16, 2, 8, dropout=0.0).eval()
    x = torch.randn(2, 8, 7)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, :3] = True
    changed = x.clone()
    changed[:, 3:] = 100.0  # garbage where the mask says padding
    assert torch.allclose(encoder(x, mask), encoder(changed, mask), atol=1e-5)


def test_transformer_accepts_a_window_without_frames() -> None:
    encoder = build_encoder("transformer", 4, 16, 1, 5, dropout=0.0).eval()
    out = encoder(torch.randn(2, 5, 4), torch.zeros(2, 5, dtype=torch.bool))
    assert torch.isfinite(out).all()


def test_unknown_encoder_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("lstm", 4, 8, 1, 4, 0.0)
