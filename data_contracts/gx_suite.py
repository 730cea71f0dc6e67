"""Great Expectations suites generated from the table declarations.

Great Expectations is imported when a suite is first built, not with this module: importing it
costs ~3 s, which a command that validates nothing (or a run that starts extracting while it
loads, `tasks.validate.preload`) should not wait for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from data_contracts.columns import Column, Table

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite


def ruled(column: Column) -> bool:
    """Whether the contract states a row rule for this column (not-null, allowed values, range)."""
    return not column.nullable or column.allowed is not None or column.range is not None


def expectations(table: Table, columns: Sequence[str] | None = None) -> list:
    """One expectation per declared rule: columns in order, not-null, allowed values, ranges.
    `columns` limits the suite to those columns (in table order); the column-list rule then
    checks exactly those."""
    import great_expectations.expectations as gxe

    wanted = None if columns is None else set(columns)
    chosen = [c for c in table.columns if wanted is None or c.name in wanted]
    out: list = [gxe.ExpectTableColumnsToMatchOrderedList(column_list=[c.name for c in chosen])]
    for c in chosen:
        out += _rules(c.name, c.nullable, c.allowed, c.range)
    return out


def _rules(column: str, nullable: bool, allowed: tuple | None, rng: tuple | None) -> list:
    """The expectations of one column's rule: not-null, then allowed values or a range."""
    import great_expectations.expectations as gxe

    out: list = [] if nullable else [gxe.ExpectColumnValuesToNotBeNull(column=column)]
    if allowed is not None:
        out.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(allowed)))
    elif rng is not None:
        out.append(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=rng[0], max_value=rng[1]))
    return out


def build_suite(table: Table, columns: Sequence[str] | None = None, name: str | None = None) -> ExpectationSuite:
    """The suite of `expectations(table, columns)`."""
    return suite_of(expectations(table, columns), name or f"affectflow.{table.name}")


def suite_of(rules: Sequence, name: str) -> ExpectationSuite:
    from great_expectations.core import ExpectationSuite

    suite = ExpectationSuite(name=name)
    for expectation in rules:
        suite.add_expectation(expectation)
    return suite


@dataclass(frozen=True)
class RuleGroup:
    """Columns that share one rule (same kind of values, nullability, allowed values or range).
    Validated as one stacked column, they cost Great Expectations one expectation instead of one
    per column: its cost is per expectation (~4 ms), hardly per value."""

    name: str
    columns: tuple[str, ...]
    text: bool
    nullable: bool
    allowed: tuple[object, ...] | None
    range: tuple[float | None, float | None] | None


def rule_groups(table: Table, columns: Sequence[str] | None = None) -> list[RuleGroup]:
    """The ruled columns of `table` (limited to `columns`) grouped by rule, in table order.
    Numbers stack with numbers and strings with strings; other types (timestamps) stay alone."""
    wanted = None if columns is None else set(columns)
    groups: dict[tuple, list[Column]] = {}
    for c in table.columns:
        if not ruled(c) or (wanted is not None and c.name not in wanted):
            continue
        kind = "number" if c.is_numeric or c.dtype == "bool" else "text" if c.dtype == "string" else c.name
        groups.setdefault((kind, c.nullable, c.allowed, c.range), []).append(c)
    return [RuleGroup(f"rule_{i:02d}", tuple(c.name for c in cols), kind == "text", nullable, allowed, rng)
            for i, ((kind, nullable, allowed, rng), cols) in enumerate(groups.items())]


def grouped_expectations(groups: Sequence[RuleGroup]) -> list:
    """The rules of `expectations`, one per group, on the stacked columns named after the groups."""
    return [rule for g in groups for rule in _rules(g.name, g.nullable, g.allowed, g.range)]
