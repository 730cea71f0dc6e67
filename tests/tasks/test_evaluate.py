"""Metrics on hand-checked inputs, the baselines, and the `metrics` rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks import evaluate as ev
from tasks import train as tr
from tests.synthetic_training import build_warehouse
from warehouse.catalog import connect


def test_emotion_metrics_by_hand() -> None:
    truth = np.array([0, 0, 0, 1, 2, -1])
    pred = np.array([0, 0, 1, 1, 0, 2])
    m = ev.emotion_metrics(truth, pred, 3)
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["uar"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    # F1 per class: 0 -> 2*(2/3*2/3)/(4/3) = 2/3, 1 -> 2/3, 2 -> 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_stress_and_regression_metrics() -> None:
    s = ev.stress_metrics(np.array([1, 0, 1, -1]), np.array([1, 1, 1, 0]))
    assert s == {"n": 3, "accuracy": pytest.approx(2 / 3), "f1": pytest.approx(0.8)}
    truth = np.array([1.0, 2.0, np.nan, 3.0])
    r = ev.regression_metrics(truth, np.array([1.0, 2.0, 0.0, 3.0]))
    assert r == {"n": 3, "ccc": pytest.approx(1.0), "mae": 0.0}
    assert ev.regression_metrics(truth, np.full(4, 2.0))["ccc"] == 0.0


def test_baselines_on_a_planted_signal(tmp_path: Path) -> None:
    wh = build_warehouse(tmp_path / "wh", videos_per_class=8, n_frames=4)
    tr.prepare_data(connect(wh), "s1", tmp_path / "run", window=4)
    prepared = tr.load_prepared(tmp_path / "run")
    majority, logreg = ev.majority_baseline(prepared), ev.logreg_baseline(prepared)
    assert majority["emotion"]["accuracy"] == 0.25  # balanced test set, one class predicted
    assert logreg["emotion"]["accuracy"] >= 0.75
    assert majority["valence"]["ccc"] == 0.0 and "valence" not in logreg
    rows = ev.metric_rows("r1", "s1", {"model": logreg, "majority": majority})
    assert {(r["model"], r["task"], r["metric"]) for r in rows} >= {
        ("model", "emotion", "macro_f1"), ("majority", "arousal", "mae"), ("model", "stress", "f1")}
    assert all(r["n"] == 8 for r in rows)
    table = ev.side_by_side({"model": logreg, "majority": majority, "logreg": logreg})
    assert table[0] == {"task": "emotion", "metric": "accuracy", "model": logreg["emotion"]["accuracy"],
                        "majority": 0.25, "logreg": logreg["emotion"]["accuracy"]}


def test_plots_are_written(tmp_path: Path) -> None:
    history = [{"stage": "supervised", "epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e} for e in (1, 2)]
    ev.plot_loss_curves(history, tmp_path / "loss.png")
    ev.plot_confusion([[3, 1], [0, 4]], ["happy", "sad"], tmp_path / "cm.png")
    for name in ("loss.png", "cm.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
