"""A progress bar for long CLI commands: count, rate and ETA on a terminal, silent elsewhere.

`progress_bar(total, "extract clip.mp4", unit="frames")` is a context manager yielding an object
with `advance(n)`. It draws with `rich` only when stderr is a terminal and no CI variable is set,
so logs, pipes and CI output never fill with redraws. `total` may be None (unknown length: the
bar shows the count and rate without an ETA).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from tasks.native_logs import terminal

CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "TF_BUILD", "JENKINS_URL")


class Advancer(Protocol):
    def advance(self, n: int = 1) -> None: ...


class RateColumn(ProgressColumn):
    """Items per second, e.g. `38.2 frames/s`."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} {self.unit}/s", style="progress.data.speed")


def is_interactive(stream: IO[str] | None = None) -> bool:
    """True on a terminal outside CI: the only place a redrawn bar is wanted."""
    stream = stream if stream is not None else sys.stderr
    if any(os.environ.get(name) for name in CI_VARIABLES):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _Quiet:
    """Counts without drawing (pipes, CI, logs)."""

    def __init__(self) -> None:
        self.completed = 0

    def advance(self, n: int = 1) -> None:
        self.completed += n


class _Bar:
    def __init__(self, progress: Progress, task_id) -> None:
        self.progress, self.task_id, self.completed = progress, task_id, 0

    def advance(self, n: int = 1) -> None:
        self.completed += n
        self.progress.advance(self.task_id, n)


def _columns(unit: str, known_total: bool) -> list[ProgressColumn]:
    columns: list[ProgressColumn] = [TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn(unit), RateColumn(unit)]
    if known_total:
        columns += [TaskProgressColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    else:
        columns.append(TimeElapsedColumn())
    return columns


@contextmanager
def progress_bar(total: int | None, description: str, unit: str = "items",
                 stream: IO[str] | None = None, force: bool | None = None) -> Iterator[Advancer]:
    """A bar over `total` units; `force` overrides the terminal test (True draws, False hides)."""
    stream = stream if stream is not None else sys.stderr
    shown = is_interactive(stream) if force is None else force
    if not shown:
        yield _Quiet()
        return
    console = Console(file=terminal(stream), force_terminal=True if force else None)  # not into the native log
    with Progress(*_columns(unit, total is not None), console=console, transient=False) as progress:
        yield _Bar(progress, progress.add_task(description, total=total))
