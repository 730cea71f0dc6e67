"""Test-set metrics for a trained model and, on the same split, the two baselines: the majority
class and a logistic regression on per-unit mean features.

Metrics per task: emotion accuracy, macro-F1, unweighted average recall (UAR) and the confusion
matrix; stress F1 and accuracy; valence and arousal CCC and MAE. Units without a label for a
task are left out of that task's scores (`n` says how many were scored).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from tasks.features import column_mean_std

METRIC_TASKS = ("emotion", "stress", "valence", "arousal")


def emotion_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    keep = y_true >= 0
    t, p = y_true[keep], y_pred[keep]
    if not len(t):
        return {"n": 0}
    labels = list(range(n_classes))
    return {"n": int(len(t)), "accuracy": float(accuracy_score(t, p)),
            "macro_f1": float(f1_score(t, p, labels=labels, average="macro", zero_division=0)),
            # UAR over the classes present in the test set (recall of an absent class is undefined)
            "uar": float(recall_score(t, p, labels=sorted(set(t.tolist())), average="macro", zero_division=0)),
            "confusion": confusion_matrix(t, p, labels=labels).tolist()}


def stress_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    keep = y_true >= 0
    t, p = y_true[keep], y_pred[keep]
    if not len(t):
        return {"n": 0}
    return {"n": int(len(t)), "accuracy": float(accuracy_score(t, p)),
            "f1": float(f1_score(t, p, zero_division=0))}


def concordance(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (0 when both sides are constant)."""
    mt, mp = y_true.mean(), y_pred.mean()
    cov = ((y_true - mt) * (y_pred - mp)).mean()
    denominator = y_true.var() + y_pred.var() + (mt - mp) ** 2
    return float(2 * cov / denominator) if denominator > 0 else 0.0


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    keep = ~np.isnan(y_true)
    t, p = y_true[keep].astype(np.float64), y_pred[keep].astype(np.float64)
    if not len(t):
        return {"n": 0}
    return {"n": int(len(t)), "ccc": concordance(t, p), "mae": float(np.abs(t - p).mean())}


def score(part, emotion_pred=None, stress_pred=None, va_pred=None, n_classes: int = 0) -> dict:
    """Metrics per task for whichever predictions are given (unit level)."""
    scores = {}
    if emotion_pred is not None:
        scores["emotion"] = emotion_metrics(part.emotion, np.asarray(emotion_pred), n_classes)
    if stress_pred is not None:
        scores["stress"] = stress_metrics(part.stress, np.asarray(stress_pred))
    if va_pred is not None:
        scores["valence"] = regression_metrics(part.va[:, 0], va_pred[:, 0])
        scores["arousal"] = regression_metrics(part.va[:, 1], va_pred[:, 1])
    return scores


def _labelled_training(prepared):
    """Unit-level training data for the baselines: the classifier and finetune partitions."""
    parts = [prepared.parts[p] for p in ("classifier", "finetune")]
    return (np.concatenate([p.means for p in parts]), np.concatenate([p.emotion for p in parts]),
            np.concatenate([p.stress for p in parts]), np.concatenate([p.va for p in parts]))


def _most_common(labels: np.ndarray) -> int:
    values, counts = np.unique(labels[labels >= 0], return_counts=True)
    return int(values[np.argmax(counts)]) if len(values) else 0


def majority_baseline(prepared) -> dict:
    """The most frequent training class (emotion, stress); the training mean (valence/arousal)."""
    _, emotion, stress, va = _labelled_training(prepared)
    test = prepared.parts["test"]
    n = len(test)
    mean_va = column_mean_std(np.asarray(va, np.float64).reshape(-1, 2))[0]
    return score(test, np.full(n, _most_common(emotion)), np.full(n, _most_common(stress)),
                 np.tile(mean_va, (n, 1)), len(prepared.emotions))


def _logistic(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
    keep = y >= 0
    classes = np.unique(y[keep])
    if len(classes) < 2:
        return np.full(len(x_test), classes[0] if len(classes) else 0)
    model = LogisticRegression(max_iter=2000, random_state=seed).fit(x[keep], y[keep])
    return model.predict(x_test)


def logreg_baseline(prepared, seed: int = 0) -> dict:
    """scikit-learn logistic regression on per-unit mean features (emotion and stress)."""
    means, emotion, stress, _ = _labelled_training(prepared)
    test = prepared.parts["test"]
    return score(test, _logistic(means, emotion, test.means, seed),
                 _logistic(means, stress, test.means, seed), None, len(prepared.emotions))


def model_scores(model, prepared) -> dict:
    from tasks.checkpoint import aggregate_units, predict_windows

    test = prepared.parts["test"]
    out = aggregate_units(predict_windows(model, test.windows), test.windows.unit, len(test))
    emotion = out["emotion"].argmax(1) if "emotion" in out else None
    stress = (out["stress"] >= 0.5).astype(np.int64) if "stress" in out else None
    return score(test, emotion, stress, out.get("valence_arousal"), len(prepared.emotions))


def evaluate_run(run_dir, cfg) -> dict:
    """The final model and both baselines on the test partition of the run's split."""
    from tasks.train import build_model, load_prepared

    prepared = load_prepared(run_dir)
    if not len(prepared.parts["test"]):
        return {"emotions": prepared.emotions, "test_units": 0, "model": {}, "majority": {}, "logreg": {}}
    model = build_model(run_dir, cfg, prepared)
    return {"emotions": prepared.emotions, "test_units": len(prepared.parts["test"]),
            "model": model_scores(model, prepared), "majority": majority_baseline(prepared),
            "logreg": logreg_baseline(prepared, cfg.seed)}


def metric_rows(run_id: str, split_id: str, results: dict) -> list[dict]:
    """Long-form rows for the `metrics` table (the confusion matrix stays in the checkpoint)."""
    rows = []
    for model in ("model", "majority", "logreg"):
        for task, values in results.get(model, {}).items():
            for metric, value in values.items():
                if metric not in ("n", "confusion"):
                    rows.append({"run_id": run_id, "split_id": split_id, "model": model, "task": task,
                                 "metric": metric, "value": value, "n": values["n"]})
    return rows


def plot_loss_curves(history: list[dict], path) -> None:
    """Training and validation loss per epoch, one panel per stage, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(h["stage"] for h in history)) or ["(no epochs)"]
    fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.5), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        rows = [h for h in history if h["stage"] == stage]
        epochs = [h["epoch"] for h in rows]
        ax.plot(epochs, [h["train_loss"] for h in rows], label="train")
        ax.plot(epochs, [h["val_loss"] for h in rows], label="validation")
        ax.set_title(stage)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], labels: list[str], path) -> None:
    """The test confusion matrix (rows true, columns predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(matrix)
    size = 1.0 + 0.6 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > values.max() / 2 else "black")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def side_by_side(results: dict) -> list[dict]:
    """One row per task and metric with the model and both baselines, for reports."""
    rows = []
    for task in METRIC_TASKS:
        metrics = [m for m in ("accuracy", "macro_f1", "uar", "f1", "ccc", "mae")
                   if m in results.get("model", {}).get(task, {}) or m in results.get("majority", {}).get(task, {})]
        for metric in metrics:
            row: dict[str, str | float | None] = {"task": task, "metric": metric}
            for model in ("model", "majority", "logreg"):
                value = results.get(model, {}).get(task, {}).get(metric)
                row[model] = None if value is None else round(float(value), 4)
            rows.append(row)
    return rows
