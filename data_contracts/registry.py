"""Every warehouse table, gathered from the contract modules. Add a module's tables here."""

from __future__ import annotations

from data_contracts.columns import Table
from data_contracts.predictions import PREDICTIONS
from data_contracts.splits import SPLIT_RUNS, SPLITS
from data_contracts.tables import DUPLICATES, FRAMES, LABELS, QUARANTINE, RUNS, VIDEOS
from data_contracts.training import METRICS, TRAINING_RUNS

_ALL: list[Table] = [FRAMES, VIDEOS, LABELS, DUPLICATES, QUARANTINE, RUNS, TRAINING_RUNS, METRICS, SPLIT_RUNS, SPLITS, PREDICTIONS]


def all_tables() -> dict[str, Table]:
    return {t.name: t for t in _ALL}
