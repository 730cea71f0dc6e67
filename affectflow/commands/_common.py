"""Helpers shared by the subcommands: one-line errors and table printing."""

from __future__ import annotations

import sys

import pyarrow as pa


def fail(message: str, code: int = 2) -> int:
    print(f"affectflow: error: {message}", file=sys.stderr)
    return code


def format_table(table: pa.Table, max_rows: int = 200) -> str:
    """Rows as aligned text; SQL NULL prints as `NULL` whatever the column's type (pandas would
    print NaN, None or NaT). A float NaN prints as NULL too; csv and json output keep them apart."""
    import pandas as pd

    frame = table.slice(0, max_rows).to_pandas()
    for name in frame.select_dtypes(include="object").columns:
        frame[name] = frame[name].where(frame[name].notna(), float("nan"))  # None -> NaN -> na_rep
    with pd.option_context("display.max_columns", 50, "display.width", 200, "display.max_colwidth", 60):
        text = frame.to_string(index=False, na_rep="NULL") if len(frame) else "(no rows)"
    if table.num_rows > max_rows:
        text += f"\n… {table.num_rows - max_rows} more rows (use --format csv --output FILE for all)"
    return text


def parameter_error(exc: Exception) -> str | None:
    """A readable message for Prefect/pydantic parameter validation errors, else None."""
    from prefect.exceptions import ParameterTypeError
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    if isinstance(exc, ParameterTypeError):
        return str(exc).replace("\n", " ")
    return None
