"""Our Flow class: parameters stored as Prefect would (without FastAPI for plain values), and a
run's end that does not wait for its heartbeat thread's sleep."""

import contextlib
import subprocess
import sys
from pathlib import Path

from prefect import Flow

from flows.build_features import build_features
from flows.train import train

PLAIN = {"source": "/data/a b.mp4", "labels": None, "fps": 2.5, "workers": 2, "force": False, "nan": float("nan")}


def test_plain_parameters_are_stored_as_prefects_encoder_would_store_them():
    ours = build_features.serialize_parameters(PLAIN)
    prefects = Flow.serialize_parameters(build_features, PLAIN)
    assert ours.keys() == prefects.keys()
    assert all(ours[k] == prefects[k] or (ours[k] != ours[k] and prefects[k] != prefects[k]) for k in PLAIN)
    assert isinstance(build_features, Flow) and isinstance(train, Flow)


def test_other_values_go_through_prefects_encoder():
    parameters = {"source": Path("/data/clips"), "sizes": (1, 2), "workers": 2}
    assert build_features.serialize_parameters(parameters) == {"source": "/data/clips", "sizes": [1, 2], "workers": 2}


def test_starting_with_plain_parameters_does_not_import_fastapi():
    code = ("import sys; from flows.build_features import build_features; "
            "build_features.serialize_parameters({'source': 'x', 'workers': 2}); print('fastapi' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_a_sync_flow_run_leaves_its_heartbeat_thread_to_stop_on_its_own(monkeypatch):
    from prefect import flow_engine

    calls = []

    def recording(engine, join_on_exit=True):
        calls.append(join_on_exit)
        return contextlib.nullcontext()

    wrapped = flow_engine._send_heartbeats
    assert wrapped.prefects.__module__ == "prefect.flow_engine"  # active with the pinned Prefect
    monkeypatch.setattr(wrapped, "prefects", recording)
    with wrapped(object(), join_on_exit=True):
        pass
    assert calls == [False]
