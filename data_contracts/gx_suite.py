"""Great Expectations suites generated from the table declarations."""

from __future__ import annotations

import great_expectations.expectations as gxe
from great_expectations.core import ExpectationSuite

from data_contracts.columns import Table


def expectations(table: Table) -> list:
    out: list = [gxe.ExpectTableColumnsToMatchOrderedList(column_list=table.names)]
    for c in table.columns:
        if not c.nullable:
            out.append(gxe.ExpectColumnValuesToNotBeNull(column=c.name))
        if c.allowed is not None:
            out.append(gxe.ExpectColumnValuesToBeInSet(column=c.name, value_set=list(c.allowed)))
        elif c.range is not None:
            low, high = c.range
            out.append(gxe.ExpectColumnValuesToBeBetween(column=c.name, min_value=low, max_value=high))
    return out


def build_suite(table: Table) -> ExpectationSuite:
    """One expectation per declared rule: columns in order, not-null, allowed values, ranges."""
    suite = ExpectationSuite(name=f"affectflow.{table.name}")
    for expectation in expectations(table):
        suite.add_expectation(expectation)
    return suite
