"""End to end on real components: a Prefect server, `affectflow serve`, a deployment run from
the Prefect CLI, then SQL on the warehouse through the affectflow CLI."""

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_cli
from tests.tasks.test_native_logs import NATIVE

pytestmark = pytest.mark.slow


def _query(served, sql):
    result = run_cli(["affectflow", "query", sql, "--format", "json"], env=served)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_deployment_run_loads_features(served, shared_dir, feat_data, tmp_path):
    media = tmp_path / "videos" / "Happy"
    media.mkdir(parents=True)
    (media / "clip.mp4").write_bytes((feat_data / "single_face.mp4").read_bytes())
    (media.parent / "broken.mp4").write_bytes(b"")
    run = run_cli(["prefect", "deployment", "run", "build-features/default",
                   "--param", f"source={media.parent}", "--watch"], env=served)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Completed" in run.stdout + run.stderr
    rows = _query(served, "select video_id, count(*) frames, avg(success) face_rate from frames group by 1")
    assert len(rows) == 1 and rows[0]["frames"] == 72 and rows[0]["face_rate"] == 1.0
    assert _query(served, "select emotion, stress, valence, arousal, label_source from labels") == [
        {"emotion": "happy", "stress": 0, "valence": 2.0, "arousal": 2.0, "label_source": "folder"}]
    assert _query(served, "select reason from quarantine") == [{"reason": "empty file (0 bytes)"}]
    served_output = (Path(served["AFFECTFLOW_HOME"]) / "serve.log").read_text()  # the flow run's stdout and stderr
    assert not NATIVE.search(served_output), NATIVE.search(served_output)  # MediaPipe's lines: in logs/native.log
    artifacts = [a for a in httpx.post(f"{served['PREFECT_API_URL']}/artifacts/filter", json={}, timeout=10).json()
                 if (a["key"] or "").startswith("build-features") and a["type"] == "table"]
    assert {"build-features-summary", "build-features-items"} <= {a["key"] for a in artifacts}
    assert not [a["data"] for a in artifacts if re.search(r"\d\.\d{5,}", json.dumps(a["data"]))]  # rounded
    # the same deployment again: nothing new
    again = run_cli(["prefect", "deployment", "run", "build-features/default",
                     "--param", f"source={media.parent}", "--watch"], env=served)
    assert again.returncode == 0
    assert _query(served, "select count(*) n from frames") == [{"n": 72}]


def test_bad_parameters_are_refused_by_the_server(served):
    result = run_cli(["prefect", "deployment", "run", "build-features/default", "--param", "fps=-3",
                      "--param", "source=/tmp"], env=served)
    assert result.returncode != 0
    assert "fps" in (result.stdout + result.stderr)


def test_query_errors_are_one_line_without_traceback(served):
    result = run_cli(["affectflow", "query", "selec * from frames"], env=served)
    assert result.returncode == 1
    assert result.stderr.startswith("affectflow: error: SQL error: Parser Error")
    assert "Traceback" not in result.stderr
    refused = run_cli(["affectflow", "query", "delete from frames"], env=served)
    assert refused.returncode == 1 and "read-only" in refused.stderr
