"""build-features with `--extractor openface` (a stand-in FeatureExtraction, or the real one where
installed) loads exactly what `--extractor openface-csv` loads from OpenFace's CSVs of the same
videos; its output reaches the run log; a missing binary stops the run before any work."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from flows.build_features import build_features
from tests.conftest import run_cli
from tests.tasks.extractors.test_openface import STDERR_MARK, STDOUT_MARK, write_stand_in
from warehouse import Warehouse
from warehouse.query import run_query

VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "no_face.mp4", "face_noface.mov", "noface_face.mov")
RAVDESS = "02-01-03-01-01-02-05.mp4"
IDENTITY = ("source_id", "video_id")  # content hashes of the item: the video here, the CSV there
FRAMES_SQL = """
select regexp_extract(v.path, '([^/]+)\\.[^./]+$', 1) as item, f.* exclude (source_id, video_id)
from frames f join videos v using (video_id) order by item, frame, face_id"""
VIDEOS_SQL = """
select regexp_extract(path, '([^/]+)\\.[^./]+$', 1) as item, n_frames, n_face_frames, face_rate, duration_s,
       contract_version, extractor, kind
from videos order by item"""


def _folders(tmp_path: Path, feat_data: Path, shared_dir: Path) -> tuple[Path, Path]:
    videos, csvs = tmp_path / "videos", tmp_path / "csvs"
    videos.mkdir()
    csvs.mkdir()
    of = shared_dir / "fixtures" / "openface"
    for name in VIDEOS:
        (videos / name).symlink_to(feat_data / name)
        (csvs / f"{Path(name).stem}.csv").symlink_to(of / "mode_A" / f"{Path(name).stem}.csv")
    (videos / RAVDESS).symlink_to(shared_dir / "data" / "ravdess-actor05" / RAVDESS)
    (csvs / f"{Path(RAVDESS).stem}.csv").symlink_to(of / "ravdess-actor05" / f"{Path(RAVDESS).stem}.csv")
    return videos, csvs


def _build(home: Path, monkeypatch, source: Path, extractor: str) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    monkeypatch.setenv("AFFECTFLOW_HOME", str(home))
    summary = build_features(source=str(source), extractor=extractor)
    wh = Warehouse(home)
    return summary, run_query(wh, FRAMES_SQL).to_pandas(), run_query(wh, VIDEOS_SQL).to_pandas()


def _logged(flow_run_id: str, timeout: float = 20.0) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    deadline, text = time.monotonic() + timeout, ""
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
            text = "\n".join(log.message for log in logs)
            if STDERR_MARK in text:
                break
            time.sleep(0.5)
    return text


@pytest.mark.slow
def test_openface_run_loads_exactly_what_the_csv_import_loads(af_home, prefect_api, monkeypatch, tmp_path,
                                                              feat_data, shared_dir):
    stand_in = write_stand_in(tmp_path / "bin", shared_dir)
    monkeypatch.setenv("OPENFACE_BIN", str(stand_in.path))
    videos, csvs = _folders(tmp_path, feat_data, shared_dir)
    ran, ran_frames, ran_videos = _build(tmp_path / "home-run", monkeypatch, videos, "openface")
    imported, csv_frames, csv_videos = _build(tmp_path / "home-csv", monkeypatch, csvs, "openface-csv")
    assert (ran["loaded"], imported["loaded"], ran["quarantined"]) == (6, 6, 0)
    assert len(ran_frames) == 472 + 72 + 95 + 169 + 169 + 97 == ran["frames"]
    pd.testing.assert_frame_equal(ran_frames, csv_frames)  # row for row, every column but the item hashes
    same = ["item", "n_frames", "n_face_frames", "face_rate", "duration_s", "contract_version"]
    pd.testing.assert_frame_equal(ran_videos[same], csv_videos[same])
    assert set(ran_videos["extractor"]) == {"openface"} and set(ran_videos["kind"]) == {"video"}
    assert set(csv_videos["extractor"]) == {"openface-csv"}
    assert len(stand_in.argv()) == 6  # once per video
    log = _logged(ran["run_id"])
    assert STDOUT_MARK in log and STDERR_MARK in log  # FeatureExtraction's own output, in the run log


def test_missing_openface_stops_before_any_work(prefect_server, tmp_path, feat_data, mediapipe_models_dir):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "OPENFACE_BIN"}
    env.update(prefect_server, AFFECTFLOW_HOME=str(home), PATH=str(Path(sys.executable).parent),
               AFFECTFLOW_OFFLINE="1", AFFECTFLOW_MODELS_DIR=str(mediapipe_models_dir))
    result = run_cli(["affectflow", "build-features", str(feat_data / "single_face.mp4"), "--extractor", "openface"], env)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "OPENFACE_BIN" in result.stderr and "install" in result.stderr.lower()
    assert not list((home / "parquet" / "frames").glob("[!_]*.parquet"))  # nothing extracted
