"""Great Expectations validation of record batches against the data contract.

A batch is checked in one GX run over its rule groups (`data_contracts.gx_suite.rule_groups`):
the columns sharing a rule stacked into one column, so ~60 filled columns cost a handful of
expectations. Only when that fails does a second run check column by column, for a message that
names each broken column and its row count.

Where GX runs (`AFFECTFLOW_VALIDATION`): `worker` (default), a child process of its own
(`tasks.validation_worker`), started by `preload` so that GX imports on the other core while
the first frames are extracted; or `inline`, in this process (a background thread imports it).
Both run `problems` below, so the verdicts are the same.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from typing import Any

import numpy as np
import pyarrow as pa

from affectflow.settings import load_settings
from data_contracts.columns import Table
from data_contracts.gx_suite import (
    RuleGroup,
    expectations,
    grouped_expectations,
    rule_groups,
    ruled,
    suite_of,
)
from tasks.errors import ItemError
from tasks.validation_worker import ValidationWorker, WorkerUnavailable

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
logging.getLogger("great_expectations").setLevel(logging.ERROR)
# This GX module pins its own logger to INFO and announces a temporary docs folder per context.
logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)

_lock = threading.Lock()
_run_lock = threading.Lock()
_validators: dict[tuple[str, tuple[str, ...], bool], tuple[Any, list[RuleGroup]]] = {}
_worker: tuple[int, ValidationWorker] | None = None  # (the process it belongs to, the worker)


def checked_columns(table: Table, batch: pa.RecordBatch | pa.Table) -> tuple[str, ...]:
    """The columns whose rules can fail on this batch: every ruled column except those that are
    entirely null here (a range or allowed-values rule skips nulls, and a nullable column has no
    not-null rule). MediaPipe fills no AU column and OpenFace no blendshape, so each extractor's
    batches are checked on the ~60 columns it fills instead of all 138 rules: Great Expectations
    costs ~4 ms per expectation whatever the row count."""
    out = []
    for c in table.columns:
        if not ruled(c):
            continue
        if c.nullable and batch.column(c.name).null_count == batch.num_rows:
            continue
        out.append(c.name)
    return tuple(out)


def _use_worker() -> bool:
    return load_settings().validation == "worker"


def _my_worker() -> ValidationWorker:
    """This process's validation worker (a forked child makes its own: pipes are not shared)."""
    global _worker
    with _lock:
        if _worker is None or _worker[0] != os.getpid():
            from tasks.native_logs import log_path

            path = log_path()
            with contextlib.suppress(OSError):
                path.parent.mkdir(parents=True, exist_ok=True)
            _worker = (os.getpid(), ValidationWorker(path if path.parent.is_dir() else None))
        return _worker[1]


def preload() -> None:
    """Get Great Expectations ready while a run extracts its first frames instead of after:
    start the worker process (it imports GX at once), or with `inline` validation import GX in
    a background thread; the first validation waits for it."""
    if _use_worker():
        try:
            _my_worker().start()
            return
        except WorkerUnavailable as exc:
            _fallback(exc)

    def load() -> None:
        with _lock:
            gx_context()

    threading.Thread(target=load, name="affectflow-gx-preload", daemon=True).start()


_warned: list[str] = []


def _fallback(exc: WorkerUnavailable) -> None:
    if not _warned:
        _warned.append(str(exc))
        logging.getLogger(__name__).warning("validating in this process instead: %s", exc)


@functools.cache
def gx_context():
    """The process's ephemeral GX context and its pandas data source (called under `_lock`)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return ctx, ctx.data_sources.add_pandas("affectflow")


def _validator(table: Table, columns: tuple[str, ...], stacked: bool) -> tuple[Any, list[RuleGroup]]:
    """One ephemeral GX context per process; one validation definition per table, set of
    checked columns (a handful per extractor) and form, built on first use. Stacked, it comes
    with the rule groups its suite checks: the columns `stacked_frame` must build."""
    key = (table.name, columns, stacked)
    with _lock:
        if key not in _validators:
            import great_expectations as gx

            ctx, source = gx_context()
            name = f"{table.name}_{len(_validators)}"
            groups = rule_groups(table, columns) if stacked else []
            rules = grouped_expectations(groups) if stacked else expectations(table, columns)
            batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("batch")
            suite = ctx.suites.add(suite_of(rules, f"affectflow.{name}"))
            definition = ctx.validation_definitions.add(
                gx.ValidationDefinition(name=f"validate_{name}", data=batch, suite=suite))
            _validators[key] = (definition, groups)
        return _validators[key]


def stacked_frame(batch: pa.RecordBatch | pa.Table, groups: list[RuleGroup]):
    """One column per rule group: its columns' values one after another, repeated cyclically up
    to the longest group's length. Every value of the batch appears and no other value does, so
    each rule's verdict is the same as column by column."""
    import pandas as pd

    length = max((len(g.columns) for g in groups), default=0) * batch.num_rows
    data = {}
    for g in groups:
        parts = [batch.column(name).to_numpy(zero_copy_only=False) for name in g.columns]
        if len(parts) > 1:
            parts = [p.astype(object if g.text else np.float64) for p in parts]
        data[g.name] = np.resize(np.concatenate(parts), length)
    return pd.DataFrame(data)


def _describe(result) -> list[str]:
    problems = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        kwargs = cfg.kwargs
        column = kwargs.get("column", "table")
        count = (r.result or {}).get("unexpected_count")
        what = cfg.type.replace("expect_column_values_to_", "").replace("expect_", "")
        detail = ""
        if "min_value" in kwargs or "max_value" in kwargs:
            detail = f" [{kwargs.get('min_value')}, {kwargs.get('max_value')}]"
        elif "value_set" in kwargs:
            detail = f" {kwargs['value_set']}"
        problems.append(f"{column}: {what}{detail}" + (f" ({count} rows)" if count else ""))
    return problems


def _non_finite(batch: pa.RecordBatch | pa.Table) -> list[str]:
    bad = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_floating(column.type):
            values = column.to_numpy(zero_copy_only=False)
            n = int(np.isinf(values).sum())
            if n:
                bad.append(f"{name}: infinite values ({n} rows)")
    return bad


def problems(table: Table, columns: tuple[str, ...], batch: pa.RecordBatch | pa.Table) -> list[str]:
    """Each broken rule of `table`'s contract on `columns` of `batch`, in words (none: valid)."""
    stacked, groups = _validator(table, columns, stacked=True)
    frame = stacked_frame(batch, groups)
    with _run_lock:  # a GX context is not safe to run from several threads at once
        result = stacked.run(batch_parameters={"dataframe": frame}, result_format="BOOLEAN_ONLY")
        if not result.success:  # run again column by column, for the names and counts the message gives
            per_column = _validator(table, columns, stacked=False)[0].run(
                batch_parameters={"dataframe": batch.select(list(columns)).to_pandas()}, result_format="SUMMARY")
            result = result if per_column.success else per_column
    return [] if result.success else _describe(result)


def _gx_problems(table: Table, columns: tuple[str, ...], batch: pa.RecordBatch | pa.Table) -> list[str]:
    if _use_worker():
        try:
            return _my_worker().problems(table.name, columns, batch)
        except WorkerUnavailable as exc:
            _fallback(exc)
    return problems(table, columns, batch)


def validate_batch(table: Table, batch: pa.RecordBatch | pa.Table) -> None:
    """Raise `ItemError` (stage `validate`) naming each broken rule; return quietly if valid."""
    if batch.schema.names != table.names:
        missing = [n for n in table.names if n not in batch.schema.names]
        extra = [n for n in batch.schema.names if n not in table.names]
        raise ItemError("validate", f"columns differ from the contract: missing {missing[:5]}, extra {extra[:5]}")
    found = _non_finite(batch) + _gx_problems(table, checked_columns(table, batch), batch)
    if found:
        shown = "; ".join(found[:4]) + (f"; and {len(found) - 4} more" if len(found) > 4 else "")
        raise ItemError("validate", f"data contract failed: {shown}")
