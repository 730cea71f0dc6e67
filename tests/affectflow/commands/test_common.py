"""Table output of `affectflow query` and the other commands."""

import datetime as dt

import pyarrow as pa

from affectflow.commands._common import format_table


def _cells(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_null_prints_as_null_in_every_column_type():
    table = pa.table({
        "f": pa.array([1.5, None], pa.float32()), "s": pa.array([None, "x"]),
        "i": pa.array([1, None], pa.int32()), "b": pa.array([True, None]),
        "t": pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.UTC), None], pa.timestamp("us", tz="UTC")),
    })
    header, first, second = _cells(format_table(table))
    assert header == ["f", "s", "i", "b", "t"]
    assert first[:4] == ["1.5", "NULL", "1", "True"]  # an integer column stays integers (pandas printed 1.0)
    assert second == ["NULL", "x", "NULL", "NULL", "NULL"]
    assert "NaN" not in format_table(table) and "None" not in format_table(table)


def test_a_query_result_of_only_nulls_and_no_rows():
    assert _cells(format_table(pa.table({"au12": pa.array([None], pa.float64())}))) == [["au12"], ["NULL"]]
    assert format_table(pa.table({"a": pa.array([], pa.int32())})) == "(no rows)"
