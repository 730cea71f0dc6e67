"""Data contracts: every column of every warehouse table, declared once.

Everything else derives from these declarations: the Arrow schemas written to Parquet, the DuckDB
DDL and views, the Great Expectations suites, and the model's input feature list. This package
imports nothing from the rest of the project.
"""

from data_contracts.columns import Column, Table, UniqueKey
from data_contracts.emotions import EmotionMap, load_emotion_map
from data_contracts.tables import (
    CONTRACT_VERSION,
    DUPLICATES,
    EXTRACTORS,
    FRAMES,
    LABELS,
    QUARANTINE,
    RUNS,
    TABLES,
    VIDEOS,
    feature_columns,
)

__all__ = [
    "CONTRACT_VERSION",
    "DUPLICATES",
    "EXTRACTORS",
    "FRAMES",
    "LABELS",
    "QUARANTINE",
    "RUNS",
    "TABLES",
    "VIDEOS",
    "Column",
    "EmotionMap",
    "Table",
    "UniqueKey",
    "feature_columns",
    "load_emotion_map",
]
