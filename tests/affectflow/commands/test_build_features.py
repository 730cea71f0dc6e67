"""`affectflow build-features` as a user runs it: real subprocesses on sample media; a re-run
with nothing to do answers without a flow run."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from tests.conftest import run_cli
from tests.tasks.test_native_logs import NATIVE


def test_a_successful_build_prints_one_line_and_nothing_on_stderr(af_home, feat_data, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "clip.mp4").write_bytes((feat_data / "single_face.mp4").read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # in this process, no server
    args = ["affectflow", "build-features", str(media), "--extractor", "mediapipe", "--max-frames", "10"]
    first = run_cli(args, env=env)
    assert first.returncode == 0, first.stderr
    assert not NATIVE.search(first.stderr), first.stderr  # MediaPipe's glog lines went to logs/native.log
    assert "RuntimeWarning" not in first.stderr and "Traceback" not in first.stderr, first.stderr
    assert re.fullmatch(r"build-features \(mediapipe\): 1 files — 1 loaded, 0 already loaded, 0 quarantined; "
                        r"10 frames, face rate 100\.0%, [0-9.]+ frames/s\n", first.stdout), first.stdout
    assert "W0000" in (af_home / "logs" / "native.log").read_text()
    again = run_cli(args, env=env)
    assert again.returncode == 0 and not NATIVE.search(again.stderr), again.stderr
    assert again.stdout == ("build-features (mediapipe): 1 files — 0 loaded, 1 already loaded, 0 quarantined; "
                            "nothing new: 1 files unchanged, so no flow run (--force re-extracts)\n")


def _build(source: Path, env: dict, *extra: str) -> dict:
    result = run_cli(["affectflow", "build-features", str(source), "--json", *extra], env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _runs(env: dict) -> list[dict]:
    result = run_cli(["affectflow", "query", "select loaded, skipped from runs order by started_at", "--format", "json"], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_rerun_with_nothing_to_do_starts_no_flow_run(prefect_server, shared_dir, tmp_path):
    media = tmp_path / "media"
    shutil.copytree(shared_dir / "fixtures/openface/mode_A", media)
    env = {**os.environ, **prefect_server, "AFFECTFLOW_HOME": str(tmp_path / "home")}
    first = _build(media, env)
    assert (first["loaded"], first["flow_run"]) == (5, True)

    again = _build(media, env)
    assert (again["loaded"], again["skipped"], again["flow_run"], again["run_id"]) == (0, 5, False, None)
    text = run_cli(["affectflow", "build-features", str(media)], env)
    assert "nothing new: 5 files unchanged, so no flow run" in text.stdout
    assert _runs(env) == [{"loaded": 5, "skipped": 0}]  # no row for either re-run

    os.utime(media / "single_face.csv")  # same bytes, new time: the flow records it (and reads nothing)
    touched = _build(media, env)
    assert (touched["loaded"], touched["skipped"], touched["flow_run"]) == (0, 5, True)
    assert _build(media, env)["flow_run"] is False  # recorded once, then quiet again

    forced = _build(media, env, "--force")
    assert forced["loaded"] == 5
    lines = (media / "single_face.csv").read_text().splitlines()
    (media / "single_face.csv").write_text("\n".join(lines[:11]) + "\n")
    changed = _build(media, env)
    assert (changed["loaded"], changed["skipped"], changed["flow_run"]) == (1, 4, True)
    assert [r["loaded"] for r in _runs(env)] == [5, 0, 5, 1]


ROWS = """select regexp_extract(v.path, '[^/]+$') f, f.frame, f.face_id, f.success, f.x_0, f.y_30, f.pose_Ry,
  f.bs_jaw_open, v.n_frames, v.n_face_frames, v.width, v.height, v.partial from frames f join videos v using (video_id)
  order by all"""


def test_the_first_videos_head_start_loads_what_the_flow_alone_loads(af_home, prefect_api, feat_data, tmp_path,
                                                                       monkeypatch):
    """The CLI starts extracting the first new video while Prefect loads; the flow's task for it
    takes those rows. The warehouse is the one a flow run without a head start builds."""
    from affectflow.cli import main
    from flows.build_features import build_features
    from tasks import extract_ahead
    from warehouse import Warehouse
    from warehouse.query import run_query

    media = tmp_path / "media"
    media.mkdir()
    for name in ("single_face.mp4", "face_noface.mov"):
        shutil.copyfile(feat_data / name, media / name)
    claimed = []
    claim = extract_ahead.claim

    def spy(key, source_id):
        found = claim(key, source_id)
        claimed.append((Path(key.path).name, found is not None))
        return found

    monkeypatch.setattr(extract_ahead, "claim", spy)
    monkeypatch.setenv("PREFECT_API_URL", prefect_api["PREFECT_API_URL"])
    assert main(["build-features", str(media), "--extractor", "mediapipe", "--max-frames", "40"]) == 0
    assert sorted(claimed) == [("face_noface.mov", True), ("single_face.mp4", False)][:len(claimed)]
    assert ("face_noface.mov", True) in claimed  # the first file found; the other video has none to claim
    assert not extract_ahead.pending()
    with_head_start = run_query(Warehouse(af_home), ROWS).to_pylist()
    assert len(with_head_start) == 80 and any(r["success"] for r in with_head_start)

    alone = tmp_path / "alone"
    monkeypatch.setenv("AFFECTFLOW_HOME", str(alone))
    build_features(source=str(media), extractor="mediapipe", max_frames=40)
    assert not extract_ahead.pending() and claimed.count(("face_noface.mov", True)) == 1  # the flow alone starts none
    assert run_query(Warehouse(alone), ROWS).to_pylist() == with_head_start
