"""Reliability on real components: kill -9 and resume, overlapping runs with readers, bad input
at volume, retries that do not repeat work."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.build_features import build_features
from tasks import faults
from tasks.media import display_path
from tests.corpus import csv_corpus, media_corpus
from warehouse import Warehouse
from warehouse.query import run_query

pytestmark = pytest.mark.slow
AFFECTFLOW = str(Path(sys.executable).parent / "affectflow")
# Everything a warehouse holds about frames, compared between two homes.
FINGERPRINT = """select v.path.regexp_extract('[^/]+$') item, f.video_id, count(*) n, sum(f.success) s,
  round(sum(f.x_0), 2) x, round(sum(f.pose_Ry), 3) ry, count(distinct f.frame) frames
  from frames f join videos v using (video_id) group by all order by all"""


def q(home: Path, sql: str) -> list[dict]:
    return run_query(Warehouse(home), sql).to_pylist()


def cli_build(home: Path, source: Path, api: dict, *extra: str, failpoints: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, AFFECTFLOW_HOME=str(home), PREFECT_API_URL=api["PREFECT_API_URL"],
               AFFECTFLOW_FAILPOINTS=failpoints)
    if not failpoints:
        env.pop("AFFECTFLOW_FAILPOINTS")
    return subprocess.run([AFFECTFLOW, "build-features", str(source), "--workers", "1", *extra],
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def media(tmp_path_factory, feat_data) -> Path:
    folder = tmp_path_factory.mktemp("media")
    for name in ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "no_face.mp4"):
        shutil.copy(feat_data / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, media, prefect_server) -> list[dict]:
    """The warehouse after one uninterrupted run."""
    home = tmp_path_factory.mktemp("reference")
    result = cli_build(home, media, prefect_server)
    assert result.returncode == 0, result.stderr
    return q(home, FINGERPRINT)


@pytest.mark.parametrize("failpoint", ["batch-written@WolfgangLanger", "frames-written@single_face"],
                         ids=["during-extraction", "during-warehouse-write"])
def test_kill_then_rerun_equals_uninterrupted_run(tmp_path, media, reference, prefect_server, failpoint, mediapipe_models_dir):
    home = tmp_path / "home"
    killed = cli_build(home, media, prefect_server, failpoints=f"{failpoint}=kill")
    assert killed.returncode == -signal.SIGKILL
    victim = failpoint.split("@")[1]
    # no half-written item is visible: the victim has either no frames or all of them
    counts = {r["item"]: r["n"] for r in q(home, FINGERPRINT)}
    assert counts.get(f"{victim}.mp4", 0) == 0
    complete = {r["item"]: r["n"] for r in reference}
    for item, n in counts.items():
        assert n == complete[item]
    rerun = cli_build(home, media, prefect_server)
    assert rerun.returncode == 0, rerun.stderr
    assert q(home, FINGERPRINT) == reference
    assert q(home, "select count(*) n, count(distinct video_id) v from videos") == [{"n": 3, "v": 3}]
    assert not list((home / "parquet").rglob(".*.tmp"))


def test_overlapping_runs_and_readers(tmp_path, feat_data, prefect_server, reference):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for folder, names in ((a, ("WolfgangLanger_Pexels.mp4", "single_face.mp4")), (b, ("single_face.mp4", "no_face.mp4"))):
        for name in names:
            shutil.copy(feat_data / name, folder / name)
    home = tmp_path / "home"
    env = dict(os.environ, AFFECTFLOW_HOME=str(home), PREFECT_API_URL=prefect_server["PREFECT_API_URL"])
    runs = [subprocess.Popen([AFFECTFLOW, "build-features", str(f), "--workers", "2"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for f in (a, b)]
    reads = 0
    while any(r.poll() is None for r in runs):
        q(home, "select count(*) n from frames")  # any lock or I/O error fails the test
        reads += 1
        time.sleep(0.05)
    assert [r.wait() for r in runs] == [0, 0], [r.stderr.read() for r in runs]
    assert reads > 10
    rows = q(home, "select video_id, count(*) n from frames group by 1")
    quarantined = q(home, "select path, reason from quarantine")
    assert sorted(r["n"] for r in rows) == [72, 95, 472], quarantined  # each video once, none lost
    assert q(home, "select count(*) n from videos") == [{"n": 3}]


def test_bad_input_at_volume(af_home, prefect_api, feat_data, shared_dir, tmp_path):
    good, bad = media_corpus(tmp_path / "media", feat_data)
    good_csv, bad_csv = csv_corpus(tmp_path / "csv", shared_dir / "fixtures/openface/mode_A")
    assert len(bad) + len(bad_csv) >= 200
    media_run = build_features(source=str(tmp_path / "media"), extractor="mediapipe", workers=2)
    csv_run = build_features(source=str(tmp_path / "csv"), extractor="openface-csv", workers=2)
    assert (media_run["loaded"], media_run["quarantined"]) == (len(good), len(bad))
    assert (csv_run["loaded"], csv_run["quarantined"]) == (len(good_csv), len(bad_csv))
    reasons = {r["path"]: r["reason"] for r in q(af_home, "select path, reason from quarantine")}
    assert len(reasons) == len(bad) + len(bad_csv)
    for path, pattern in {**bad, **bad_csv}.items():
        assert re.search(pattern, reasons[display_path(path)]), (path.name, reasons[display_path(path)])
    loaded = {r["path"] for r in q(af_home, "select path from videos")}
    assert {str(p) for p in good + good_csv} <= loaded
    assert q(af_home, "select sum(quarantined) q from runs") == [{"q": len(bad) + len(bad_csv)}]


def test_transient_failures_are_retried_permanent_ones_are_not(af_home, prefect_api, feat_data, tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(feat_data / "single_face.mp4", folder / "flaky.mp4")
    (folder / "broken.mp4").write_bytes(b"")
    monkeypatch.setenv(faults.ENV, "extract-item@flaky=transient:2,extract-item@broken=error:0")
    faults._hits.clear()
    summary = build_features.with_options(retry_delay_seconds=0)(source=str(folder), extractor="mediapipe")
    assert (summary["loaded"], summary["quarantined"]) == (1, 1)
    assert faults._hits["extract-item@flaky"] == 3  # two injected failures, then the real run
    assert faults._hits["extract-item@broken"] == 1  # a bad file is quarantined once, not retried


def test_flow_retry_does_not_redo_finished_items(af_home, prefect_api, feat_data, tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("single_face.mp4", "no_face.mp4"):
        shutil.copy(feat_data / name, folder / name)
    monkeypatch.setenv(faults.ENV, "flow-end=error:1")
    faults._hits.clear()
    summary = build_features.with_options(retries=1, retry_delay_seconds=0)(source=str(folder))
    assert faults._hits["flow-end@"] == 2
    assert (summary["loaded"], summary["skipped"]) == (0, 2)  # the retry found both items done
    assert q(af_home, "select count(*) n from frames") == [{"n": 72 + 95}]
