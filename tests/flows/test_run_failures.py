"""Runs that meet trouble finish and say so: a video that decodes only in part, an item that
still fails after its retries, a full or read-only disk, a run killed outright."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import pytest

from flows.build_features import build_features
from warehouse import Warehouse
from warehouse.query import run_query

pytestmark = pytest.mark.slow
AFFECTFLOW = str(Path(sys.executable).parent / "affectflow")


def q(home: Path, sql: str) -> list[dict]:
    return run_query(Warehouse(home), sql).to_pylist()


def _cut_off_avi(source: Path, target: Path, keep: float) -> int:
    """An MJPEG AVI of `source`'s frames, cut off after `keep` of its bytes (a broken download):
    its header still lists every frame. Returns the frames listed."""
    cap = cv2.VideoCapture(str(source))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr)
    height, width = frames[0].shape[:2]
    whole = target.with_suffix(".whole.avi")
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 24, (width, height))
    for bgr in frames:
        writer.write(bgr)
    writer.release()
    data = whole.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    whole.unlink()
    return len(frames)


def test_a_video_that_decodes_in_part_loads_flagged_partial(af_home, prefect_api, feat_data, tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    listed = _cut_off_avi(feat_data / "single_face.mp4", folder / "cut.avi", 0.3)
    shutil.copy(feat_data / "no_face.mp4", folder / "whole.mp4")  # decodes 95 of the 98 it lists: not partial
    summary = build_features(source=str(folder), extractor="mediapipe")
    assert summary["loaded"] == 2
    rows = {r["f"]: r for r in q(af_home, "select regexp_extract(path, '[^/]+$') f, n_frames, partial, note from videos")}
    assert rows["whole.mp4"]["partial"] is False and rows["whole.mp4"]["note"] is None
    cut = rows["cut.avi"]
    assert cut["partial"] is True and 0 < cut["n_frames"] < 0.5 * listed
    assert cut["note"] == f"decoded {cut['n_frames']} of the {listed} frames the container lists: " \
                          "the file is damaged after that point"
    assert summary["partial"] == [{"path": str(folder / "cut.avi"), "note": cut["note"]}]


def _cli(args: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([AFFECTFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_an_item_that_fails_after_its_retries_is_recorded_and_the_run_ends_nonzero(af_home, prefect_server,
                                                                                  feat_data, tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    for name in ("single_face.mp4", "no_face.mp4"):
        shutil.copy(feat_data / name, folder / name)
    env = dict(os.environ, PREFECT_API_URL=prefect_server["PREFECT_API_URL"],
               AFFECTFLOW_FAILPOINTS="extract-item@no_face=transient:5")
    run = _cli(["build-features", str(folder), "--extractor", "mediapipe"], env)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert run.stderr.strip().splitlines()[-1] == ("affectflow: error: 1 item(s) still failed after their retries "
                                                  "(see the quarantine table, stage 'failed'); run again to retry them")
    assert q(af_home, "select stage, reason from quarantine") == [
        {"stage": "failed", "reason": "failed after 3 attempts: injected transient failure at extract-item (3/5)"}]
    assert q(af_home, "select status, loaded, failed from runs") == [{"status": "failed", "loaded": 1, "failed": 1}]
    env.pop("AFFECTFLOW_FAILPOINTS")
    again = _cli(["build-features", str(folder), "--extractor", "mediapipe"], env)
    assert again.returncode == 0, again.stderr
    assert q(af_home, "select count(*) n from quarantine") == [{"n": 0}]
    assert q(af_home, "select count(*) n from videos") == [{"n": 2}]


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill up ({done.stderr.strip()}); needs root and CAP_SYS_ADMIN")


@pytest.mark.parametrize("options, words", [("size=600k", "No space left on device"), ("ro,size=1m", "Read-only file system")],
                         ids=["full", "read-only"])
def test_a_full_or_read_only_home_is_one_line_and_nothing_half_written(prefect_server, shared_dir, tmp_path, options,
                                                                      words, mediapipe_models_dir):
    home = tmp_path / "home"
    _mount_tmpfs(home, options)
    try:
        env = dict(os.environ, PREFECT_API_URL=prefect_server["PREFECT_API_URL"], AFFECTFLOW_HOME=str(home),
                   AFFECTFLOW_MODELS_DIR=str(mediapipe_models_dir))
        run = _cli(["build-features", str(shared_dir / "fixtures/openface/mode_A")], env)
        assert run.returncode == 1
        assert "Traceback" not in run.stderr + run.stdout
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith(f"affectflow: error: cannot write to {home}") and last.endswith(words), run.stderr
        assert not [p for p in home.rglob("*.tmp")]  # no temporary file left behind
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


def test_a_killed_run_is_marked_crashed_by_the_next_one(af_home, prefect_server, feat_data, tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copy(feat_data / "single_face.mp4", folder / "clip.mp4")
    api = prefect_server["PREFECT_API_URL"]
    env = dict(os.environ, PREFECT_API_URL=api, AFFECTFLOW_FAILPOINTS="batch-written@clip=kill")
    killed = _cli(["build-features", str(folder), "--extractor", "mediapipe"], env)
    assert killed.returncode == -signal.SIGKILL
    records = list((af_home / "active-runs").glob("*.json"))
    assert len(records) == 1
    run_id = records[0].stem
    assert httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]["type"] == "RUNNING"  # what Prefect shows
    env.pop("AFFECTFLOW_FAILPOINTS")
    assert _cli(["build-features", str(folder), "--extractor", "mediapipe"], env).returncode == 0
    deadline = time.monotonic() + 30
    while httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]["type"] != "CRASHED":
        assert time.monotonic() < deadline, "the killed run was not marked crashed"
        time.sleep(0.5)
    state = httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]
    assert "marked crashed by the next run" in state["message"]
    assert not list((af_home / "active-runs").glob("*.json"))


@pytest.mark.parametrize("args, failpoint", [(["resplit", "--mode", "reshuffle", "--seed", "7"], "split-written=kill"),
                                             (["train", "--epochs", "2"], "train-epoch=kill")],
                         ids=["resplit", "train"])
def test_a_killed_resplit_or_train_is_marked_crashed_by_the_next_run(af_home, prefect_server, args, failpoint):
    from tests.synthetic_training import build_warehouse

    build_warehouse(af_home, videos_per_class=8)
    api = prefect_server["PREFECT_API_URL"]
    env = dict(os.environ, PREFECT_API_URL=api, AFFECTFLOW_FAILPOINTS=failpoint)
    killed = _cli(args, env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    records = list((af_home / "active-runs").glob("*.json"))
    assert len(records) == 1 and f'"flow": "{args[0]}"' in records[0].read_text()
    run_id = records[0].stem
    assert httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]["type"] == "RUNNING"
    env.pop("AFFECTFLOW_FAILPOINTS")
    again = _cli(args, env)
    assert again.returncode == 0, again.stderr[-2000:]
    state = httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]
    assert state["type"] == "CRASHED" and "marked crashed by the next run" in state["message"]
    assert not list((af_home / "active-runs").glob("*.json"))
