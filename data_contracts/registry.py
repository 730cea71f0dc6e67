"""Every warehouse table, gathered from the contract modules. Add a module's tables here."""

from __future__ import annotations

from data_contracts.columns import Table
from data_contracts.tables import FRAMES, LABELS, QUARANTINE, RUNS, VIDEOS

_ALL: list[Table] = [FRAMES, VIDEOS, LABELS, QUARANTINE, RUNS]


def all_tables() -> dict[str, Table]:
    return {t.name: t for t in _ALL}
