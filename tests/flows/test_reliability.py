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


NATIVE_LINES = re.compile(r"moov atom|EBML header|Premature end of JPEG|libpng|W0000|InitGoogle|TensorFlow Lite|\[ERROR:")


def test_bad_input_at_volume(af_home, prefect_api, feat_data, shared_dir, tmp_path, capfd):
    """A few hundred items of some 45 kinds, most of them broken or hostile: every bad one is
    quarantined with its own reason, every good one loads with its frames, nothing crashes, and
    the native libraries' chatter goes to the native log instead of stderr."""
    media = media_corpus(tmp_path / "media", feat_data)
    csvs = csv_corpus(tmp_path / "csv", shared_dir / "fixtures/openface/mode_A")
    kinds = {**media.kinds, **csvs.kinds}
    assert len(kinds) >= 250 and len(set(kinds.values())) >= 25
    media_run = build_features(source=str(tmp_path / "media"), labels=str(media.manifest), extractor="mediapipe", workers=2)
    csv_run = build_features(source=str(tmp_path / "csv"), extractor="openface-csv", workers=2)
    assert (media_run["loaded"], media_run["quarantined"]) == (len(media.good), len(media.bad))
    assert (csv_run["loaded"], csv_run["quarantined"]) == (len(csvs.good), len(csvs.bad))
    bad, good = {**media.bad, **csvs.bad}, {**media.good, **csvs.good}
    quarantine = {r["path"]: r for r in q(af_home, "select path, reason, copy_path from quarantine")}
    assert set(quarantine) == {display_path(p) for p in bad}
    for path, pattern in bad.items():
        assert re.search(pattern, quarantine[display_path(path)]["reason"]), (kinds[path], quarantine[display_path(path)])
    loaded = {r["path"]: r["n"] for r in q(af_home, "select path, sum(n_frames) n from videos group by 1")}
    assert loaded == {str(p): n for p, n in good.items()}
    labels = q(af_home, "select v.path, l.emotion, l.stress, l.label_source from labels l join videos v using (video_id)")
    assert {r.pop("path"): r for r in labels if Path(r["path"]) in media.labels} == {str(p): v for p, v in media.labels.items()}
    assert q(af_home, "select sum(quarantined) q from runs") == [{"q": len(bad)}]
    _check_quarantine_copies(af_home, quarantine.values(), media.no_copy, tmp_path)
    err = capfd.readouterr().err
    assert "Traceback" not in err and [line for line in err.splitlines() if NATIVE_LINES.search(line)] == []
    native = (af_home / "logs" / "native.log").read_text()
    assert all(text in native for text in ("moov atom not found", "libpng warning", "W0000"))


def _check_quarantine_copies(home: Path, rows, no_copy: set[Path], tmp_path: Path) -> None:
    """Copies only of files that are part of a source (links resolved); nothing else."""
    sources = [os.path.realpath(tmp_path / "media"), os.path.realpath(tmp_path / "csv")]
    copies = {r["copy_path"] for r in rows if r["copy_path"]}
    assert copies == {str(p) for p in (home / "quarantine" / "files").iterdir()}
    for r in rows:
        if r["copy_path"]:
            assert any(os.path.realpath(r["path"]).startswith(s + os.sep) for s in sources), r
    assert [r for r in rows if Path(r["path"]) in no_copy and r["copy_path"]] == []


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
    assert faults._hits["extract-item@broken"] == 0  # an empty file is quarantined when planned, never retried
    assert q(af_home, "select reason from quarantine") == [{"reason": "empty file (0 bytes)"}]


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
