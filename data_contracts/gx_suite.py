"""Great Expectations suites generated from the table declarations."""

from __future__ import annotations

from collections.abc import Sequence

import great_expectations.expectations as gxe
from great_expectations.core import ExpectationSuite

from data_contracts.columns import Column, Table


def ruled(column: Column) -> bool:
    """Whether the contract states a row rule for this column (not-null, allowed values, range)."""
    return not column.nullable or column.allowed is not None or column.range is not None


def expectations(table: Table, columns: Sequence[str] | None = None) -> list:
    """One expectation per declared rule: columns in order, not-null, allowed values, ranges.
    `columns` limits the suite to those columns (in table order); the column-list rule then
    checks exactly those."""
    wanted = None if columns is None else set(columns)
    chosen = [c for c in table.columns if wanted is None or c.name in wanted]
    out: list = [gxe.ExpectTableColumnsToMatchOrderedList(column_list=[c.name for c in chosen])]
    for c in chosen:
        if not c.nullable:
            out.append(gxe.ExpectColumnValuesToNotBeNull(column=c.name))
        if c.allowed is not None:
            out.append(gxe.ExpectColumnValuesToBeInSet(column=c.name, value_set=list(c.allowed)))
        elif c.range is not None:
            low, high = c.range
            out.append(gxe.ExpectColumnValuesToBeBetween(column=c.name, min_value=low, max_value=high))
    return out


def build_suite(table: Table, columns: Sequence[str] | None = None, name: str | None = None) -> ExpectationSuite:
    """The suite of `expectations(table, columns)`."""
    suite = ExpectationSuite(name=name or f"affectflow.{table.name}")
    for expectation in expectations(table, columns):
        suite.add_expectation(expectation)
    return suite
