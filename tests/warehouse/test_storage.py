"""The Parquet tree on a local folder or an object store, against a real S3-compatible server
(moto's server mode on 127.0.0.1) with a bucket made by the test."""

import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from data_contracts import FRAMES, VIDEOS
from tasks.load import now, sweep_orphans
from tests.s3_server import BUCKET, aws_env, forget_clients, make_bucket, moto_server
from warehouse import Warehouse, snapshot
from warehouse.catalog import connect, refresh_catalog
from warehouse.query import QueryError, run_query
from warehouse.storage import ObjectPath, read_table, register, settled, storage_root
from warehouse.writer import PartitionWriter, rows_to_table, write_atomic


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The server's endpoint and an s3fs client that checks what is stored in the bucket."""
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint, make_bucket(endpoint)


@pytest.fixture()
def s3_env(s3, monkeypatch, tmp_path):
    endpoint, bucket_fs = s3
    for key, value in aws_env(endpoint).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AFFECTFLOW_WAREHOUSE_URL", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "staging"))  # where uploads are staged
    (tmp_path / "staging").mkdir()
    forget_clients()
    return bucket_fs


def _url(request) -> str:
    return f"s3://{BUCKET}/{request.node.name}"


def _video(source_id: str, n: int) -> dict:
    return {"source_id": source_id, "video_id": source_id, "path": f"/m/{source_id}.mp4", "kind": "video",
            "n_frames": n, "n_face_frames": n, "face_rate": 1.0, "extractor": "openface-csv",
            "extractor_version": "1", "extractor_config": "{}", "config_hash": "c", "contract_version": "1",
            "run_id": "r", "extracted_at": now()}


def _frames(source_id: str, n: int) -> pa.RecordBatch:
    rows = [{"video_id": source_id, "source_id": source_id, "frame": i, "face_id": 0, "timestamp": i / 25,
             "success": 1} for i in range(n)]
    return rows_to_table(FRAMES, rows).to_batches()[0]


def test_root_is_local_unless_a_url_is_given(tmp_path, s3_env):
    assert storage_root(tmp_path, None) == tmp_path / "parquet"
    assert storage_root(tmp_path, "") == tmp_path / "parquet"
    assert storage_root(tmp_path, f"file://{tmp_path}/elsewhere") == tmp_path / "elsewhere"
    assert str(storage_root(tmp_path, f"s3://{BUCKET}/lab/")) == f"s3://{BUCKET}/lab"
    with pytest.raises(ValueError, match="AFFECTFLOW_WAREHOUSE_URL='nosuch://x'"):
        storage_root(tmp_path, "nosuch://x")


def test_warehouse_url_comes_from_settings(tmp_path, s3_env, monkeypatch):
    assert Warehouse(tmp_path).root == tmp_path / "parquet"
    monkeypatch.setenv("AFFECTFLOW_WAREHOUSE_URL", f"s3://{BUCKET}/from-env")
    wh = Warehouse(tmp_path)
    assert isinstance(wh.root, ObjectPath)
    assert str(wh.file_for("videos", "a")) == f"s3://{BUCKET}/from-env/videos/a.parquet"
    assert Warehouse(tmp_path, url="").root == tmp_path / "parquet"


def test_objects_are_written_whole_read_listed_and_removed(tmp_path, s3_env, request):
    wh = Warehouse(tmp_path / "home", url=_url(request)).init()
    target = wh.file_for("videos", "a")
    assert write_atomic(target, rows_to_table(VIDEOS, [_video("a", 3)])) == target
    assert target.exists() and s3_env.exists(f"{BUCKET}/{request.node.name}/videos/a.parquet")
    assert read_table(target, columns=["n_frames"]).to_pylist() == [{"n_frames": 3}]
    assert [p.stem for p in wh.files("videos")] == ["a"]  # the schema seed is not an item
    assert s3_env.exists(f"{BUCKET}/{request.node.name}/frames/_schema.parquet")
    target.unlink()
    assert not target.exists()
    with pytest.raises(FileNotFoundError):
        target.unlink()
    target.unlink(missing_ok=True)
    assert not (tmp_path / "home" / "parquet").exists()  # nothing went to the local tree
    assert list((tmp_path / "staging").iterdir()) == []  # staged uploads are cleaned up


def test_streamed_object_appears_only_on_commit(tmp_path, s3_env, request):
    wh = Warehouse(tmp_path, url=_url(request)).init()
    target = wh.file_for("frames", "a")
    with PartitionWriter(target, FRAMES.arrow_schema()) as writer:
        writer.write(_frames("a", 5))
        assert not target.exists()
        writer.commit()
    assert read_table(target).num_rows == 5
    with PartitionWriter(wh.file_for("frames", "b"), FRAMES.arrow_schema()) as writer:
        writer.write(_frames("b", 5))
        writer.abort()
    assert not wh.file_for("frames", "b").exists()
    assert list((tmp_path / "staging").iterdir()) == []


def test_duckdb_reads_the_objects_through_fsspec(tmp_path, s3_env, request):
    wh = Warehouse(tmp_path, url=_url(request)).init()
    for sid, n in (("a", 10), ("b", 4)):
        write_atomic(wh.file_for("videos", sid), rows_to_table(VIDEOS, [_video(sid, n)]))
    con = connect(wh)
    assert con.execute("select sum(n_frames), count(*) from videos").fetchone() == (14, 2)
    assert con.execute("select count(*) from frames").fetchone() == (0,)  # columns from the seed
    assert run_query(wh, "select video_id from videos order by 1").to_pylist() == [{"video_id": "a"},
                                                                                   {"video_id": "b"}]
    with pytest.raises(QueryError, match="disabled by configuration"):
        run_query(wh, f"select * from read_parquet('s3://{BUCKET}/elsewhere/*.parquet')")


def test_catalog_is_rebuilt_from_the_objects_alone(tmp_path, s3_env, request):
    writer_home, other_home = tmp_path / "machine_a", tmp_path / "machine_b"
    wh = Warehouse(writer_home, url=_url(request)).init()
    write_atomic(wh.file_for("videos", "a"), rows_to_table(VIDEOS, [_video("a", 7)]))
    rebuilt = Warehouse(other_home, url=_url(request))
    assert refresh_catalog(rebuilt)
    with duckdb.connect(str(rebuilt.catalog_path), read_only=True) as con:
        register(con, rebuilt.root)
        assert con.execute("select n_frames from videos").fetchall() == [(7,)]


def test_each_machine_keeps_a_snapshot_of_the_bucket(tmp_path, s3_env, request):
    """Machine A's flows publish a local snapshot of the bucket's frames; objects that machine B
    writes, rewrites or removes afterwards are seen exactly (size, time and ETag per object)."""
    machine_a = Warehouse(tmp_path / "a", url=_url(request)).init()
    machine_b = Warehouse(tmp_path / "b", url=_url(request))
    for sid, n in (("x", 6), ("y", 4)):
        write_atomic(machine_a.file_for("frames", sid), pa.Table.from_batches([_frames(sid, n)]))
    assert refresh_catalog(machine_a) and snapshot.current(machine_a) is None  # a flow's end starts none here
    assert refresh_catalog(machine_a, rebuild=True)  # `affectflow warehouse rebuild`
    assert snapshot.current(machine_a) is not None and snapshot.current(machine_b) is None
    per_source = "select source_id, count(*) from frames group by 1 order by 1"
    with connect(machine_a) as con:
        assert "snap.frames" in con.execute("select sql from duckdb_views() where view_name = 'frames'").fetchone()[0]
        assert con.execute(per_source).fetchall() == [("x", 6), ("y", 4)]
    write_atomic(machine_b.file_for("frames", "x"), pa.Table.from_batches([_frames("x", 2)]))
    machine_b.file_for("frames", "y").unlink()
    write_atomic(machine_b.file_for("frames", "z"), pa.Table.from_batches([_frames("z", 3)]))
    expected = [("x", 2), ("z", 3)]
    for wh in (machine_a, machine_b):  # A: snapshot + changes from the bucket; B: views only
        with connect(wh) as con:
            assert con.execute(per_source).fetchall() == expected
    assert snapshot.publish(machine_a, start=False).inserted_files == 2  # kept up to date by flows
    with connect(machine_a) as con:
        assert con.execute(per_source).fetchall() == expected


def test_fresh_orphans_on_an_object_store_are_left_to_their_writer(tmp_path, s3_env, request):
    """A frames object with no videos row may belong to another machine that is between its two
    uploads (its lock is not visible here), so the sweep keeps it until it is old."""
    wh = Warehouse(tmp_path, url=_url(request)).init()
    orphan = write_atomic(wh.file_for("frames", "a"), rows_to_table(FRAMES, []))
    assert not settled(orphan, 600) and settled(orphan, -1)
    assert settled(Path(tmp_path / "any.parquet"), 600)
    assert sweep_orphans(wh) == 0
    assert orphan.exists()
