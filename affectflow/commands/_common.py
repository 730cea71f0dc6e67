"""Helpers shared by the subcommands: one-line errors and table printing.

Imports stay light here (no pyarrow, pandas or Prefect at module level): every command module
imports this one when `affectflow` starts, and `affectflow --help` should answer at once."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

MAX_COLUMN_WIDTH = 60
# Exit codes, the same for every command: USAGE when the command cannot start as typed (argparse's
# own errors, a parameter out of bounds, a path, split, run or model named on the command line that
# does not exist or cannot be used); FAILURE when it started and could not finish (a flow run
# failed, SQL the database refused, an unreachable object store, nothing there yet to show).
USAGE, FAILURE = 2, 1


def fail(message: str, code: int = USAGE) -> int:
    print(f"affectflow: error: {message}", file=sys.stderr)
    return code


def display_value(value: object) -> str:
    """One cell as a person reads it: SQL NULL (and a float NaN) as `NULL`, floats to 6
    significant digits (`2009.53`, not `2009.5335108778058`; `1.0` stays a float), text on one
    line and at most MAX_COLUMN_WIDTH characters."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NULL"
    if isinstance(value, float):
        text = f"{value:.6g}"
        return text if any(c in text for c in ".einf") else text + ".0"  # 1.0 reads as a float
    text = str(value).replace("\n", "\\n")
    return text if len(text) <= MAX_COLUMN_WIDTH else text[:MAX_COLUMN_WIDTH - 1] + "…"


def format_table(table: pa.Table, max_rows: int = 200) -> str:
    """An Arrow table's first `max_rows` rows as aligned text (`format_rows`)."""
    shown = table.slice(0, max_rows)
    rows = list(zip(*(shown.column(i).to_pylist() for i in range(shown.num_columns)), strict=True))
    return format_rows(shown.column_names, rows, table.num_rows)


def format_rows(names: Sequence[str], rows: Sequence[Sequence[object]], total: int | None = None) -> str:
    """Rows as aligned text (right-aligned, as a spreadsheet shows numbers); SQL NULL prints as
    `NULL` whatever the column's type, an integer stays an integer. `total` is the result's
    full size when `rows` are only its first rows."""
    if not rows:
        return "(no rows)"
    columns = [[name, *(display_value(row[i]) for row in rows)] for i, name in enumerate(names)]
    widths = [max(map(len, cells)) for cells in columns]
    text = "\n".join(" ".join(cells[line].rjust(width) for cells, width in zip(columns, widths, strict=True))
                     for line in range(len(rows) + 1))
    if total is not None and total > len(rows):
        text += f"\n… {total - len(rows)} more rows (use --format csv --output FILE for all)"
    return text


def parameter_error(exc: Exception) -> str | None:
    """A readable message for Prefect/pydantic parameter validation errors, else None."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    if "prefect.exceptions" not in sys.modules:  # not raised by Prefect then; importing it costs ~2 s
        return None
    from prefect.exceptions import ParameterTypeError

    if isinstance(exc, ParameterTypeError):  # "Flow run received invalid parameters:\n - workers: …"
        lines = [line.strip().removeprefix("- ") for line in str(exc).splitlines()]
        return "; ".join(line for line in lines if line and not line.endswith("invalid parameters:"))
    return None
