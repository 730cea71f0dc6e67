"""Great Expectations in its own process: same verdicts as in-process, never outlives its parent,
and a dead worker costs speed, not validation."""

import os
import signal
import subprocess
import sys
import time

import pytest

from data_contracts import FRAMES, LABELS
from tasks import validate
from tasks.errors import ItemError
from tasks.extractors.base import frames_batch
from tasks.validation_worker import ValidationWorker

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _frames(**features):
    keys = {"video_id": ["v", "v"], "frame": [0, 1], "face_id": [0, 0], "timestamp": [0.0, 0.04],
            "success": [1, 1], "confidence": [0.9, 0.95]}
    return frames_batch("s", keys, {k: list(v) for k, v in features.items()})


BATCHES = {
    "valid": _frames(AU12_r=[2.5, 0.0], x_0=[10.0, 11.0], pose_Rx=[0.1, -0.2]),
    "AU out of range": _frames(AU12_r=[7.5, 1.0], x_0=[10.0, 11.0]),
    "two rules broken": _frames(AU12_r=[-1.0, 9.0], AU06_c=[3.0, 1.0]),
}


def _verdict(table, batch, mode, monkeypatch):
    monkeypatch.setenv("AFFECTFLOW_VALIDATION", mode)
    try:
        validate.validate_batch(table, batch)
    except ItemError as exc:
        return str(exc)
    return "valid"


@pytest.mark.parametrize("name", list(BATCHES))
def test_worker_and_inline_give_the_same_verdict(name, monkeypatch):
    batch = BATCHES[name]
    worker = _verdict(FRAMES, batch, "worker", monkeypatch)
    inline = _verdict(FRAMES, batch, "inline", monkeypatch)
    assert worker == inline
    assert (worker == "valid") == (name == "valid")
    if name != "valid":
        assert "AU12_r" in worker and "data contract failed" in worker


def test_worker_answers_for_every_table_it_is_sent(monkeypatch):
    import pyarrow as pa

    monkeypatch.setenv("AFFECTFLOW_VALIDATION", "worker")
    bad = pa.Table.from_pylist([{**{c.name: None for c in LABELS.columns}, "video_id": "v", "valence": 9.0}],
                               schema=LABELS.arrow_schema())
    with pytest.raises(ItemError, match="valence"):
        validate.validate_batch(LABELS, bad)


def test_a_dead_worker_falls_back_to_validating_in_process(monkeypatch, caplog):
    monkeypatch.setenv("AFFECTFLOW_VALIDATION", "worker")
    worker = ValidationWorker()
    monkeypatch.setattr(validate, "_worker", (os.getpid(), worker))
    monkeypatch.setattr(validate, "_warned", [])
    worker.start()
    assert worker._process is not None
    worker._process.kill()
    worker._process.wait()
    with pytest.raises(ItemError, match="AU12_r"):
        validate.validate_batch(FRAMES, BATCHES["AU out of range"])
    assert "validating in this process instead" in caplog.text
    validate.validate_batch(FRAMES, BATCHES["valid"])  # and goes on checking, in-process


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone too
        return f.read().split(")")[-1].split()[0] != "Z"


def test_worker_dies_with_a_parent_killed_by_sigkill(tmp_path):
    code = (f"import sys, time; sys.path.insert(0, {REPO!r})\n"
            "from tasks.validation_worker import ValidationWorker\n"
            "w = ValidationWorker(); w.start(); print(w._process.pid, flush=True); time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 60  # the child may still be importing GX when its stdin closes
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child), "the validation worker outlived its killed parent"


def test_the_extracting_process_never_loads_great_expectations(tmp_path):
    code = (f"import sys; sys.path.insert(0, {REPO!r})\n"
            "from tasks.validate import validate_batch\n"
            "from tests.tasks.test_validation_worker import BATCHES\n"
            "from data_contracts import FRAMES\n"
            "validate_batch(FRAMES, BATCHES['valid'])\n"
            "try:\n    validate_batch(FRAMES, BATCHES['AU out of range'])\nexcept Exception as e:\n    print(e)\n"
            "print([m for m in sys.modules if m.split('.')[0] == 'great_expectations'][:3])\n")
    env = {**os.environ, "AFFECTFLOW_VALIDATION": "worker", "AFFECTFLOW_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=300).stdout.splitlines()
    assert "AU12_r" in out[0]
    assert out[-1] == "[]"
