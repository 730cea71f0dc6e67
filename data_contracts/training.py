"""Training outputs: one row per training run, and its metrics in long form."""

from __future__ import annotations

from data_contracts.columns import Column, Table

TRAINING_RUNS = Table(
    "training_runs",
    (
        Column("run_id", "string", nullable=False),
        Column("split_id", "string", nullable=False),
        Column("status", "string", nullable=False, allowed=("completed", "failed")),
        Column("started_at", "timestamp", nullable=False),
        Column("finished_at", "timestamp", nullable=False),
        Column("params", "string", nullable=False, description="JSON of the flow parameters"),
        Column("encoder", "string", nullable=False, allowed=("mlp", "transformer")),
        Column("loss_weighting", "string", nullable=False, allowed=("fixed", "uncertainty", "gradnorm")),
        Column("stages", "string", nullable=False, description="stages run, comma separated"),
        Column("tasks", "string", nullable=False, description="tasks trained, comma separated"),
        Column("device", "string", nullable=False),
        Column("extractor", "string"),
        Column("n_features", "int32", nullable=False, range=(0, None)),
        Column("train_units", "int32", nullable=False, range=(0, None)),
        Column("test_units", "int32", nullable=False, range=(0, None)),
        Column("epochs_run", "int32", nullable=False, range=(0, None)),
        Column("frames_per_s", "float32", unit="1/s", description="training throughput"),
        Column("checkpoint", "string", nullable=False, description="path of the checkpoint file"),
        Column("contract_version", "string", nullable=False),
        Column("error", "string", description="one line, when the run failed"),
    ),
    key=("run_id",),
    description="One row per training run.",
)

METRICS = Table(
    "metrics",
    (
        Column("run_id", "string", nullable=False),
        Column("split_id", "string", nullable=False),
        Column("model", "string", nullable=False, description="model, majority or logreg"),
        Column("task", "string", nullable=False, allowed=("emotion", "stress", "valence", "arousal")),
        Column("metric", "string", nullable=False,
               allowed=("accuracy", "macro_f1", "uar", "f1", "ccc", "mae")),
        Column("value", "float64"),
        Column("n", "int32", nullable=False, range=(0, None), description="test units scored"),
    ),
    key=("run_id", "model", "task", "metric"),
    description="Test-set metrics per run, model (the trained model and the baselines) and task.",
)
