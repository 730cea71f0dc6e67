"""The native libraries' own log lines go to `<home>/logs/native.log`, not to the terminal.

FFmpeg (through OpenCV: `moov atom not found`, `Truncating packet …`), libjpeg (`Premature end of
JPEG file`), libpng warnings, OpenCV's `[ERROR:…]` lines and MediaPipe's glog/absl/TFLite lines
(`W0000 … inference_feedback_manager.cc`, `WARNING: Logging before InitGoogle()`) are written by
C code straight to file descriptor 2, one or more per file, so a run over hundreds of bad files
filled the terminal. Python's logging cannot catch them; `captured()` points fd 2 at the log file
while native code runs, and moves Python's own stderr writers (`sys.stderr`, the logging handlers
and Rich consoles writing to it, `faulthandler`) to a copy of the original fd 2, so everything
Python prints still reaches the terminal.

Captures nest and overlap across threads (a reference count: the first to enter redirects, the
last to leave restores). `capturing` wraps a function or a generator function in one; the
decoding functions of `tasks.media` and the MediaPipe extractor use it, so every process that
extracts (threads, process pools, Dask workers, deployments) captures its own native output. A
child process started during a capture inherits fd 2, so its stderr goes to the log file as well.
"""

from __future__ import annotations

import faulthandler
import functools
import inspect
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO, TypeVar

LOG_NAME = "native.log"
ROTATE_BYTES = 20 * 1024 * 1024  # past this size the log moves to native.log.1 when a capture starts
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class _Capture:
    path: Path
    terminal: TextIO  # Python's stderr while capturing: a copy of the original fd 2
    moved: list[tuple[Any, str, Any]] = field(default_factory=list)  # (object, attribute, old value)
    faulthandler_was_on: bool = False


_lock = threading.Lock()
_depth = 0
_active: _Capture | None = None
# The copy of fd 2 that Python writes to while capturing, per fd 2 file (device, inode). Kept open
# for the life of the process: a writer made during a capture may hold it after the capture ends.
_terminals: dict[tuple[int, int], TextIO] = {}
_announced: set[tuple[int, Path]] = set()  # (pid, log) pairs whose header line is written


def log_path(home: Path | None = None) -> Path:
    if home is None:
        from affectflow.settings import load_settings

        home = load_settings().home
    return Path(home) / "logs" / LOG_NAME


@contextmanager
def captured(home: Path | None = None) -> Iterator[Path | None]:
    """While active, native writes to fd 2 land in the log file (yielded); None when the log
    cannot be opened (e.g. a read-only home): the output then stays where it was."""
    global _depth, _active
    with _lock:
        if _depth == 0:
            _active = _start(log_path(home))
        _depth += 1
        path = _active.path if _active else None
    try:
        yield path
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _active is not None:
                _stop(_active)
                _active = None


def capturing(fn: F) -> F:
    """`fn` (a function or a generator function) run inside `captured()`."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with captured():
                yield from fn(*args, **kwargs)
        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        with captured():
            return fn(*args, **kwargs)
    return plain  # type: ignore[return-value]


def _writes_fd2(stream: Any) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False


def _open_log(path: Path) -> int | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except OSError:
        return None


def terminal(stream: IO[str]) -> IO[str]:
    """`stream`, or where it writes outside captures when it writes to fd 2: a long-lived
    writer (a progress bar's console) made with `sys.stderr` would otherwise draw into the log
    whenever a capture is active."""
    if not _writes_fd2(stream):
        return stream
    with _lock:
        if _active is not None:
            return _active.terminal
    try:
        return _terminal()
    except OSError:
        return stream


def _terminal() -> TextIO:
    info = os.fstat(2)
    key = (info.st_dev, info.st_ino)
    if key not in _terminals:
        encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
        _terminals[key] = open(os.dup(2), "w", encoding=encoding, errors="backslashreplace", buffering=1)  # noqa: SIM115
    return _terminals[key]


def _start(path: Path) -> _Capture | None:
    fd = _open_log(path)
    if fd is None:
        return None
    try:
        terminal = _terminal()
    except OSError:  # no fd 2 to keep (a daemon): nothing to capture either
        os.close(fd)
        return None
    if sys.stderr is not None:
        sys.stderr.flush()
    capture = _Capture(path, terminal)
    if (os.getpid(), path) not in _announced:  # one header per process, not per capture
        _announced.add((os.getpid(), path))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
        os.write(fd, f"--- {stamp} pid {os.getpid()} ({program}): native library output\n".encode())
    os.dup2(fd, 2)  # fd 2 is now the log (and inheritable: child processes write there too)
    os.close(fd)
    _move_python_writers(capture)
    return capture


def _move_python_writers(capture: _Capture) -> None:
    """Point every Python writer of fd 2 at the saved copy, remembering what to restore."""
    def move(obj: Any, attribute: str) -> None:
        current = getattr(obj, attribute, None)
        if current is not None and _writes_fd2(current):
            capture.moved.append((obj, attribute, current))
            setattr(obj, attribute, capture.terminal)

    move(sys, "stderr")
    loggers = [logging.getLogger(), *list(logging.Logger.manager.loggerDict.values())]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler):
                move(handler, "stream")
            console = getattr(handler, "console", None)  # Rich (Prefect's console handler)
            if console is not None:
                move(console, "file")
    if faulthandler.is_enabled():
        capture.faulthandler_was_on = True
        faulthandler.enable(file=capture.terminal)  # a crash report reaches the terminal


def _stop(capture: _Capture) -> None:
    capture.terminal.flush()
    os.dup2(capture.terminal.fileno(), 2)
    for obj, attribute, old in reversed(capture.moved):
        if getattr(obj, attribute, None) is capture.terminal:  # unless someone replaced it since
            setattr(obj, attribute, old)
    if capture.faulthandler_was_on:
        faulthandler.enable(file=2)
