"""The declaration types: a column and a table, and what can be generated from them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import pyarrow as pa

# Contract dtype -> (Arrow type, DuckDB type). One place, so Parquet and SQL never disagree.
DTYPES: dict[str, tuple[pa.DataType, str]] = {
    "string": (pa.string(), "VARCHAR"),
    "int8": (pa.int8(), "TINYINT"),
    "int16": (pa.int16(), "SMALLINT"),
    "int32": (pa.int32(), "INTEGER"),
    "int64": (pa.int64(), "BIGINT"),
    "float32": (pa.float32(), "FLOAT"),
    "float64": (pa.float64(), "DOUBLE"),
    "bool": (pa.bool_(), "BOOLEAN"),
    "timestamp": (pa.timestamp("us", tz="UTC"), "TIMESTAMPTZ"),
}


@dataclass(frozen=True)
class Column:
    """One column: its name, type, unit, whether it may be null, its valid range or values,
    which extractors fill it, and whether it is a model input feature."""

    name: str
    dtype: str
    unit: str = ""
    nullable: bool = True
    range: tuple[float | None, float | None] | None = None
    allowed: tuple[object, ...] | None = None
    extractors: tuple[str, ...] = ()
    feature: bool = False
    group: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"column {self.name}: unknown dtype {self.dtype!r}")

    @property
    def arrow_type(self) -> pa.DataType:
        return DTYPES[self.dtype][0]

    @property
    def duckdb_type(self) -> str:
        return DTYPES[self.dtype][1]

    @property
    def is_numeric(self) -> bool:
        return self.dtype.startswith(("int", "float"))


@dataclass(frozen=True)
class Table:
    """A warehouse table: its columns in order, its key, and its description."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    description: str = ""
    by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"table {self.name}: columns declared twice: {duplicated}")
        missing_key = [k for k in self.key if k not in names]
        if missing_key:
            raise ValueError(f"table {self.name}: key columns not declared: {missing_key}")
        object.__setattr__(self, "by_name", {c.name: c for c in self.columns})

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        fields = [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns]
        return pa.schema(fields, metadata={"affectflow.table": self.name})

    def duckdb_columns_sql(self) -> str:
        """`name TYPE [NOT NULL], …` for CREATE TABLE."""
        parts = []
        for c in self.columns:
            null = "" if c.nullable else " NOT NULL"
            parts.append(f'"{c.name}" {c.duckdb_type}{null}')
        return ",\n  ".join(parts)

    def empty(self) -> pa.Table:
        return self.arrow_schema().empty_table()

    def fingerprint(self) -> str:
        payload = json.dumps([asdict(c) for c in self.columns], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
