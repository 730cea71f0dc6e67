"""Mistakes a command can see before it starts a flow: one line, fast, and no flow run left
behind on the server."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import run_cli


def _flow_runs(api: str) -> int:
    return len(httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json())


@pytest.mark.parametrize("args, message", [
    (["build-features", "{tmp}/mediaa"], "source not found: {tmp}/mediaa; did you mean {tmp}/media?"),
    (["build-features", "{tmp}/media", "--labels", "{tmp}/labels.csv"], "labels file not found: {tmp}/labels.csv"),
    (["build-features", "{tmp}/empty"], "no media found in folder {tmp}/empty"),
    (["build-features", "{tmp}/media/*.mkv"], "no files match '{tmp}/media/*.mkv'"),
    (["predict", "{tmp}/nowhere.mp4"], "source not found: {tmp}/nowhere.mp4"),
    (["build-features", "{tmp}/media", "--labels", "{tmp}/media/a.csv"],
     "manifest {tmp}/media/a.csv has no 'path' column: its columns are 'frame'; expected 'path' and any of "
     "emotion, subject_id, valence, arousal, stress"),
    (["build-features", "{tmp}/media", "--extractor", "openface"], "OpenFace's FeatureExtraction not found"),
], ids=["mistyped-source", "missing-labels", "empty-folder", "glob-without-match", "predict-missing",
        "manifest-headers", "openface-missing"])
def test_setup_errors_answer_at_once_and_create_no_flow_run(prefect_server, af_home, tmp_path, args, message):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.csv").write_text("frame\n")
    (tmp_path / "empty").mkdir()
    api = prefect_server["PREFECT_API_URL"]
    before = _flow_runs(api)
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "OPENFACE_BIN"}
    done = run_cli(["affectflow", *[a.format(tmp=tmp_path) for a in args]], env=dict(env, PREFECT_API_URL=api))
    took = time.monotonic() - started
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"affectflow: error: {message.format(tmp=tmp_path)}"), done.stderr
    assert _flow_runs(api) == before  # nothing in the UI for a typo
    assert took < 5, f"{took:.1f} s to report a setup error"  # (about 0.3 s on an idle machine; loose for CI)


def test_an_unreachable_server_is_one_line(af_home, tmp_path):
    (tmp_path / "a.csv").write_text("frame\n")
    done = run_cli(["affectflow", "build-features", str(tmp_path)],
                   env=dict(os.environ, PREFECT_API_URL="http://127.0.0.1:9/api"))
    assert done.returncode == 2
    assert done.stderr.strip() == ("affectflow: error: the Prefect server at http://127.0.0.1:9/api does not answer "
                                   "(ConnectionRefusedError); start it with `make serve`, or unset PREFECT_API_URL to run "
                                   "without one")


def test_a_missing_openface_binary_is_found_before_numpy_or_pandas_load(tmp_path):
    """The check that answers `--extractor openface` without OpenFace loads no heavy library (it
    took 1.3 s when it imported the extractor, pandas and all; now about 0.15 s for the command)."""
    code = ("import sys\nfrom affectflow import preflight\ntry:\n    preflight.check_extractor('openface', '.')\n"
            "except preflight.PreflightError as exc:\n    print(exc)\n"
            "print(sorted(m for m in ('numpy', 'pandas', 'pyarrow', 'prefect') if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if k != "OPENFACE_BIN"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    message, loaded = done.stdout.strip().splitlines()
    assert message.startswith("OpenFace's FeatureExtraction not found") and loaded == "[]", done.stdout
