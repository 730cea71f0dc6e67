"""The declaration types: a column and a table, and what can be generated from them."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow and numpy load where a schema or a check is built, not on import:
    import numpy as np  # `affectflow query` reads the declarations and prints rows without them
    import pyarrow as pa

# Contract dtype -> (Arrow type, DuckDB type). One place, so Parquet and SQL never disagree.
DTYPES: dict[str, tuple[str, str]] = {
    "string": ("string", "VARCHAR"),
    "int8": ("int8", "TINYINT"),
    "int16": ("int16", "SMALLINT"),
    "int32": ("int32", "INTEGER"),
    "int64": ("int64", "BIGINT"),
    "float32": ("float32", "FLOAT"),
    "float64": ("float64", "DOUBLE"),
    "bool": ("bool_", "BOOLEAN"),
    "timestamp": ("timestamp[us, UTC]", "TIMESTAMPTZ"),
}


@functools.cache
def arrow_type(dtype: str) -> pa.DataType:
    """The Arrow type of a contract dtype (`DTYPES`)."""
    import pyarrow as pa

    name = DTYPES[dtype][0]
    return pa.timestamp("us", tz="UTC") if name.startswith("timestamp") else getattr(pa, name)()


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
        return arrow_type(self.dtype)

    @property
    def duckdb_type(self) -> str:
        return DTYPES[self.dtype][1]

    @property
    def is_numeric(self) -> bool:
        return self.dtype.startswith(("int", "float"))

    @property
    def is_integer(self) -> bool:
        return self.dtype.startswith("int")

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """The values this column can hold: its declared range, narrowed for an integer dtype to
        what the dtype stores (so `int16` caps at 32767 instead of wrapping 65537 to 1)."""
        low, high = self.range or (None, None)
        if self.is_integer:
            bits = int(self.dtype[3:])
            low = -(2 ** (bits - 1)) if low is None else max(low, -(2 ** (bits - 1)))
            high = 2 ** (bits - 1) - 1 if high is None else min(high, 2 ** (bits - 1) - 1)
        return low, high

    @property
    def rule(self) -> str:
        """The declared rule in words, for messages: `one of 0, 1`, `an integer in [0, 32767]`."""
        if self.allowed is not None:
            return "one of " + ", ".join(map(str, self.allowed))
        low, high = self.bounds
        span = (f" in [{low}, {high}]" if low is not None and high is not None else
                f" ≥ {low}" if low is not None else f" ≤ {high}" if high is not None else "")
        return ("an integer" if self.is_integer else "a number") + span

    def violation(self, values: Sequence[float] | np.ndarray) -> tuple[int, str] | None:
        """The first of `values` (numbers, NaN for missing) that breaks this column's declaration,
        as (position, what is wrong): `missing`, `is not an integer`, `out of range`,
        `is not one of …`. None when all hold. Run before casting, so nothing wraps or truncates."""
        import numpy as np

        x = np.asarray(values, dtype=np.float64)
        missing = np.isnan(x)
        checks = [(missing & (not self.nullable), "missing")]
        if self.is_integer:
            checks.append((~missing & (x != np.round(x)), "is not an integer"))
        if self.allowed is not None:
            checks.append((~missing & ~np.isin(x, np.asarray(self.allowed, dtype=np.float64)), f"is not {self.rule}"))
        else:
            low, high = self.bounds
            checks.append((~missing & ((x < (-np.inf if low is None else low)) |
                                       (x > (np.inf if high is None else high))), "out of range"))
        bad = [(int(np.argmax(mask)), what) for mask, what in checks if mask.any()]
        return min(bad, key=lambda found: found[0]) if bad else None  # the first row; its first broken check


@dataclass(frozen=True)
class Table:
    """A warehouse table: its columns in order, its key (unique: no two rows share its values),
    and its description."""

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
        """The Arrow schema (built once per table: every batch written is checked against it)."""
        cached = self.__dict__.get("_arrow_schema")  # a frozen dataclass: kept beside its fields
        if cached is None:
            cached = self.__dict__["_arrow_schema"] = self._build_arrow_schema()
        return cached

    def _build_arrow_schema(self) -> pa.Schema:
        import pyarrow as pa

        arrow_fields = [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns]
        return pa.schema(arrow_fields, metadata={"affectflow.table": self.name})

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
        """A hash of every column's declaration; computed once per table (a query asks for it on
        each run, and `frames` has ~800 columns). Column fields are plain values and tuples, so a
        shallow dict serialises as `dataclasses.asdict` would, at a fraction of the cost."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            names = [f.name for f in fields(Column)]
            payload = json.dumps([{n: getattr(c, n) for n in names} for c in self.columns], sort_keys=True,
                                 default=str)
            cached = hashlib.sha256(payload.encode()).hexdigest()[:16]
            object.__setattr__(self, "_fingerprint", cached)  # frozen: set once, like `by_name`
        return cached


class UniqueKey:
    """A table's key rule (`Table.key` is unique), checked across every batch of one item: feed
    it each batch's key columns with the rows' positions (e.g. line numbers in a CSV)."""

    def __init__(self, table: Table):
        self.columns = table.key
        self._seen: dict[tuple, int] = {}

    def first_repeat(self, batch: Mapping[str, Sequence], positions: Sequence[int]) -> tuple[int, int] | None:
        """(position of the first row whose key was seen before, position where it was seen),
        or None; the keys of this batch are remembered for the next."""
        import numpy as np

        keys = zip(*(np.asarray(batch[name]).tolist() for name in self.columns), strict=True)
        for key, position in zip(keys, positions, strict=True):
            first = self._seen.setdefault(key, position)
            if first != position:
                return position, first
        return None
