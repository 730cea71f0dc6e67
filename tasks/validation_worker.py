"""Great Expectations in a process of its own, beside the extraction.

Importing GX costs ~5 CPU-s and ~160 MB (~3 CPU-s here, see `main`), and it is pure Python: in a background thread of the
extracting process it holds the GIL the extractor's per-frame Python needs, so a 472-frame clip
took ~5 s longer however the import was scheduled. In a child process it runs on the other
core while the first frames are extracted, and the extracting process never loads GX at all.
The child does exactly what in-process validation does (`tasks.validate.problems`); this
module only carries batches there and problems back.

Protocol, over the child's stdin/stdout: each message is a 4-byte big-endian length and a pickle.
Request `(table name, checked columns, Arrow IPC stream of the batch's checked columns)`; answer
`("ok", [problem, ...])` or `("error", text)`. The child exits when its stdin closes, so it never
outlives its parent (not even one killed with -9). If the child cannot start or dies, validation
falls back to the parent's own process for the rest of the run, with one warning: slower, same
verdicts.
"""

from __future__ import annotations

import importlib
import os
import pickle
import struct
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

_HEADER = struct.Struct(">I")
_REPO = Path(__file__).resolve().parents[1]


class WorkerUnavailable(RuntimeError):
    """The worker process could not start, or died: validate in-process instead."""


def _send(stream: IO[bytes], message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the other side closed the pipe")
    size = _HEADER.unpack(header)[0]
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError("the other side closed the pipe mid-message")
    return pickle.loads(payload)  # noqa: S301 - our own child process, over its private pipe


def _ipc(batch: pa.RecordBatch | pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write(batch)
    return sink.getvalue().to_pybytes()


class ValidationWorker:
    """The parent's handle on one child process (started on first use, or by `start`)."""

    def __init__(self, log_file: Path | None = None):
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._broken: str | None = None

    def start(self) -> None:
        with self._lock:
            self._ensure()

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._broken:
            raise WorkerUnavailable(self._broken)
        if self._process is not None and self._process.poll() is None:
            return self._process
        if self._process is not None:
            self._fail(f"the validation process exited with code {self._process.returncode}")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))}
        log = self._open_log()
        try:
            self._process = subprocess.Popen([sys.executable, "-m", "tasks.validation_worker"], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=log if log else subprocess.DEVNULL,
                                             env=env, start_new_session=True)
        except OSError as exc:
            self._fail(f"could not start the validation process: {exc}")
        finally:
            if log:
                log.close()
        assert self._process is not None
        return self._process

    def _open_log(self) -> IO[bytes] | None:
        """Where the child's own messages go (the native log), when it can be opened."""
        try:
            return open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115 - closed once handed over
        except OSError:
            return None

    def _fail(self, why: str) -> None:
        self._broken = why
        self.close()
        raise WorkerUnavailable(why)

    def problems(self, table_name: str, columns: tuple[str, ...], batch: pa.RecordBatch | pa.Table) -> list[str]:
        """The contract's verdict on `batch` (its `columns`, the ones whose rules can fail)."""
        data = _ipc(batch.select(list(columns)))
        with self._lock:
            process = self._ensure()
            assert process.stdin is not None and process.stdout is not None
            try:
                _send(process.stdin, (table_name, columns, data))
                status, answer = _receive(process.stdout)
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                self._fail(f"the validation process stopped answering ({type(exc).__name__}: {exc})")
        if status != "ok":
            raise RuntimeError(f"validation process: {answer}")
        return list(answer)

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        for stream in (process.stdin, process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The child's loop: one verdict per request until the parent closes the pipe."""
    from data_contracts import TABLES
    from tasks import validate

    validate.gx_context()  # the import and the context, while the parent extracts its first frames
    while True:
        try:
            table_name, columns, data = _receive(stdin)
        except EOFError:
            return
        try:
            batch = pa.ipc.open_stream(data).read_all()
            answer: tuple[str, Any] = ("ok", validate.problems(TABLES[table_name], tuple(columns), batch))
        except Exception as exc:  # reported to the parent, which raises it in the run that sent the batch
            answer = ("error", f"{type(exc).__name__}: {exc}")
        _send(stdout, answer)


class _Deferred(types.ModuleType):
    """A module imported on first use. GX imports altair and scipy.stats at module level for
    expectations affectflow's contracts never use (KL divergence, KS tests): ~80 MB and ~2 CPU-s
    of the worker's start. Should one be used, the real module is imported then."""

    def __getattr__(self, attribute: str) -> Any:
        sys.modules.pop(self.__name__, None)
        return getattr(importlib.import_module(self.__name__), attribute)


def main() -> None:
    for name in ("altair", "scipy.stats"):
        sys.modules.setdefault(name, _Deferred(name))
    # GX works without SQLAlchemy (its SQL data sources are left out); Prefect's server needs it
    # installed, which made GX import all of it (~0.5 s) for the pandas frames it checks here.
    sys.modules["sqlalchemy"] = None  # type: ignore[assignment]
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers on the pipe, whatever a library prints
    _serve(stdin, stdout)


if __name__ == "__main__":
    main()
