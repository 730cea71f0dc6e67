"""Image folders in shards: one task run, one extractor and one Parquet file per table for many
images, with idempotency and quarantine still per image."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flows.build_features import build_features
from tasks import plan as planning
from tests.face_images import write_face_images
from warehouse import Warehouse
from warehouse.query import run_query

AFFECTFLOW = str(Path(sys.executable).parent / "affectflow")
ROWS = """select regexp_extract(v.path, '[^/]+$') f, f.frame, f.face_id, f.success, round(f.x_0, 3) x0,
  round(f.y_30, 3) y30, round(f.pose_Ry, 4) ry, round(f.bs_jaw_open, 4) jaw, v.kind, v.n_frames, v.width, l.emotion
  from frames f join videos v using (video_id) left join labels l using (video_id) order by all"""


def q(home: Path, sql: str) -> list[dict]:
    return run_query(Warehouse(home), sql).to_pylist()


def _files(home: Path, table: str) -> dict[str, tuple[int, int]]:
    folder = home / "parquet" / table
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.glob("*.parquet") if p.name[0] != "_"}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return write_face_images(tmp_path_factory.mktemp("faces"), 40)


def test_a_sharded_run_equals_loading_the_images_one_by_one(af_home, prefect_api, images, tmp_path, monkeypatch):
    summary = build_features(source=str(images[0].parent), extractor="mediapipe")
    assert (summary["loaded"], summary["frames"]) == (40, 40)
    assert len(_files(af_home, "frames")) == 3  # 40 images, 2 workers: 3 shards of up to 16
    sharded = q(af_home, ROWS)
    assert sum(r["success"] for r in sharded) >= 36  # real faces, found
    one_by_one = tmp_path / "one-by-one"
    monkeypatch.setenv("AFFECTFLOW_HOME", str(one_by_one))
    monkeypatch.setattr(planning, "SHARD_MAX_ITEMS", 1)
    monkeypatch.setattr(planning, "SHARD_MIN_ITEMS", 1)
    build_features(source=str(images[0].parent), extractor="mediapipe")
    assert len(_files(one_by_one, "frames")) == 40
    assert q(one_by_one, ROWS) == sharded


def test_a_bad_image_is_quarantined_alone_and_its_shard_mates_load(af_home, prefect_api, images, tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    for path in images[:20]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / images[3].name).write_bytes(b"not a jpeg at all" * 50)
    data = images[7].read_bytes()
    (folder / images[7].name).write_bytes(data[: len(data) // 3])  # cut short: still decodes, or not
    summary = build_features(source=str(folder), extractor="mediapipe")
    assert summary["loaded"] + summary["quarantined"] == 20 and summary["quarantined"] >= 1
    assert len(_files(af_home, "frames")) == 2  # both shards written, the bad image is not in them
    bad = q(af_home, "select regexp_extract(path, '[^/]+$') f, reason from quarantine")
    assert {"f": images[3].name, "reason": "cannot decode image: not an image file, or corrupt"} in bad
    assert q(af_home, "select count(*) n from videos") == [{"n": summary["loaded"]}]


def test_a_changed_image_is_reextracted_and_nothing_else_is(af_home, prefect_api, images, tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    for path in images[:20]:
        (folder / path.name).write_bytes(path.read_bytes())
    build_features(source=str(folder), extractor="mediapipe")
    before = {r["f"]: r for r in q(af_home, "select regexp_extract(path, '[^/]+$') f, source_id, run_id, extracted_at "
                                            "from videos")}
    changed = folder / images[5].name
    changed.write_bytes(images[30].read_bytes())  # another face in its place
    summary = build_features(source=str(folder), extractor="mediapipe")
    assert (summary["loaded"], summary["skipped"]) == (1, 19)
    after = {r["f"]: r for r in q(af_home, "select regexp_extract(path, '[^/]+$') f, source_id, run_id, extracted_at "
                                           "from videos")}
    assert set(after) == set(before)
    assert after[changed.name]["source_id"] != before[changed.name]["source_id"]
    assert {k: v for k, v in after.items() if k != changed.name} == {k: v for k, v in before.items() if k != changed.name}
    assert q(af_home, "select count(*) n, count(distinct source_id) s from frames") == [{"n": 20, "s": 20}]


def test_rerunning_an_image_folder_changes_nothing(af_home, prefect_api, images):
    build_features(source=str(images[0].parent), extractor="mediapipe")
    tables = ("frames", "videos", "labels", "quarantine", "duplicates")
    before = {t: _files(af_home, t) for t in tables}
    snapshot = sorted(p.name for p in (af_home / "snapshots").glob("frames-*.duckdb"))
    summary = build_features(source=str(images[0].parent), extractor="mediapipe")
    assert (summary["loaded"], summary["skipped"], summary["frames"]) == (0, 40, 0)
    assert {t: _files(af_home, t) for t in tables} == before  # not one file rewritten
    assert sorted(p.name for p in (af_home / "snapshots").glob("frames-*.duckdb")) == snapshot
    for path in images:  # touched (or copied without -p): same bytes, new times
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    touched = build_features(source=str(images[0].parent), extractor="mediapipe")
    assert (touched["loaded"], touched["skipped"]) == (0, 40)  # recognised by their bytes, not re-extracted
    assert _files(af_home, "frames") == before["frames"]
    after_touch = {t: _files(af_home, t) for t in tables}  # the new times recorded once (videos files) ...
    build_features(source=str(images[0].parent), extractor="mediapipe")
    assert {t: _files(af_home, t) for t in tables} == after_touch  # ... so the next run reads nothing again


@pytest.mark.slow
def test_kill_mid_shard_leaves_no_partial_shard_and_the_rerun_completes_it(af_home, prefect_server, images, tmp_path):
    env = dict(os.environ, PREFECT_API_URL=prefect_server["PREFECT_API_URL"],
               AFFECTFLOW_FAILPOINTS=f"batch-written@{images[20].name}=kill")
    killed = subprocess.run([AFFECTFLOW, "build-features", str(images[0].parent), "--extractor", "mediapipe",
                             "--workers", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    shards = q(af_home, "select count(*) n from videos")[0]["n"]
    assert shards in (0, 16, 32)  # whole shards only (16 images each here), never a part of one
    assert q(af_home, "select count(*) n from frames") == [{"n": shards}]
    assert images[20].name not in {r["f"] for r in q(af_home, "select regexp_extract(path, '[^/]+$') f from videos")}
    env.pop("AFFECTFLOW_FAILPOINTS")
    rerun = subprocess.run([AFFECTFLOW, "build-features", str(images[0].parent), "--extractor", "mediapipe",
                            "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert q(af_home, "select count(*) n, count(distinct video_id) v from frames") == [{"n": 40, "v": 40}]
    assert not list((af_home / "parquet").rglob(".*.tmp"))
