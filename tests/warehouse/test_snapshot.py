"""Native-table snapshots of `frames`: same answers as the Parquet views, always fresh, never locked."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from data_contracts import FRAMES
from tasks.extractors.base import frames_batch
from warehouse import Warehouse, snapshot
from warehouse.catalog import connect, refresh_catalog
from warehouse.query import run_query
from warehouse.writer import write_atomic

PER_SOURCE = "select source_id, count(*) n, sum(x_0) x, count(AU12_r) au from frames group by 1 order by 1"


def _put(wh: Warehouse, source_id: str, n: int, x: float = 1.0, au: float | None = None) -> None:
    keys = {"video_id": [source_id] * n, "frame": list(range(n)), "face_id": [0] * n,
            "timestamp": [i / 30 for i in range(n)], "success": [1] * n, "confidence": [0.9] * n}
    features = {"x_0": [x] * n, **({"AU12_r": [au] * n} if au is not None else {})}
    write_atomic(wh.file_for("frames", source_id), pa.Table.from_batches([frames_batch(source_id, keys, features)]))


def _both(wh: Warehouse, sql: str) -> tuple[list, list]:
    with connect(wh, use_snapshot=False) as views, connect(wh) as snap:
        return views.execute(sql).fetchall(), snap.execute(sql).fetchall()


@pytest.fixture()
def wh(tmp_path):
    wh = Warehouse(tmp_path, url="").init()
    _put(wh, "a", 10)
    _put(wh, "b", 5, x=2.0)
    return wh


def test_snapshot_answers_like_the_views_and_stores_only_filled_columns(wh):
    assert refresh_catalog(wh)
    assert snapshot.current(wh) is not None
    views, snap = _both(wh, PER_SOURCE)
    assert snap == views == [("a", 10, 10.0, 0), ("b", 5, 10.0, 0)]
    with connect(wh) as con:
        assert "snap.frames" in con.execute("select sql from duckdb_views() where view_name = 'frames'").fetchone()[0]
        described = con.execute("describe frames").fetchall()
        stored = con.execute("select count(*) from pragma_table_info('snap.frames')").fetchone()[0]
    assert [r[0] for r in described] == FRAMES.names  # all 800 columns, contract order and types
    assert {r[0]: r[1] for r in described}["AU12_r"] == "FLOAT"
    assert stored < 20  # keys + x_0: the 790-odd empty columns are not stored


def test_files_written_rewritten_or_removed_after_the_snapshot_are_seen_exactly(wh):
    snapshot.publish(wh)
    _put(wh, "c", 3, au=2.5)  # new, and it fills a column the snapshot does not store
    _put(wh, "b", 7, x=3.0)  # rewritten
    wh.file_for("frames", "a").unlink()  # removed
    expected = [("b", 7, 21.0, 0), ("c", 3, 3.0, 3)]
    views, snap = _both(wh, PER_SOURCE)
    assert snap == views == expected
    published = snapshot.publish(wh)
    assert (published.inserted_files, published.removed_files) == (2, 2)  # b out and in again, a out, c in
    assert _both(wh, PER_SOURCE) == (expected, expected)
    with connect(wh) as con:
        assert "read_parquet" not in con.execute("select sql from duckdb_views() where view_name = 'frames'").fetchone()[0]
    assert snapshot.publish(wh).inserted_files == 0  # nothing changed: no new snapshot
    assert len(list((wh.home / "snapshots").glob("frames-*.duckdb"))) == 2


def test_query_command_path_uses_the_snapshot_under_its_lock_down(wh):
    snapshot.publish(wh)
    _put(wh, "c", 2)
    assert run_query(wh, "select count(*) n from frames").to_pylist() == [{"n": 17}]
    with pytest.raises(Exception, match="Permission Error"):
        run_query(wh, f"select * from read_parquet('{wh.home}/snapshots/*.duckdb')")


def test_a_reader_in_another_process_does_not_block_publishing(wh):
    snapshot.publish(wh)
    ready = wh.home / "reader-ready"
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from warehouse import Warehouse
        from warehouse.catalog import connect
        con = connect(Warehouse(Path({str(wh.home)!r}), url=""))
        assert con.execute("select count(*) from frames").fetchone()[0] == 15
        Path({str(ready)!r}).touch()
        time.sleep(3)
        print(con.execute("select count(*) from frames").fetchone()[0])
    """)], cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
    for _ in range(300):
        if ready.exists() or reader.poll() is not None:
            break
        time.sleep(0.05)
    for i in range(4):  # pruning removes the reader's snapshot file while it is attached
        _put(wh, f"d{i}", 2)
        assert snapshot.publish(wh).inserted_files == 1
    out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0 and out.strip() == "15"  # it kept reading its own snapshot
    assert run_query(wh, "select count(*) n from frames").to_pylist() == [{"n": 23}]


def test_a_snapshot_from_another_contract_version_is_ignored(wh):
    path = snapshot.publish(wh).path
    with duckdb.connect(str(path)) as con:
        con.execute("update _meta set value = 'older' where key = 'fingerprint'")
    _put(wh, "a", 1)
    with connect(wh) as con:
        assert "snap.frames" not in con.execute("select sql from duckdb_views() where view_name = 'frames'").fetchone()[0]
        assert con.execute("select count(*) from frames").fetchone()[0] == 6
    assert snapshot.publish(wh).inserted_files == 2  # rebuilt from scratch for this contract
    assert _both(wh, PER_SOURCE)[1] == [("a", 1, 1.0, 0), ("b", 5, 10.0, 0)]


def test_an_object_store_warehouse_gets_a_snapshot_on_this_machine(tmp_path):
    """fsspec's in-memory store stands in for a bucket here (tests/warehouse/test_storage.py runs
    the same against a real S3 server): the snapshot is a local file, the objects stay remote."""
    wh = Warehouse(tmp_path / "home", url=f"memory://{tmp_path.name}/wh").init()
    _put(wh, "a", 10)
    _put(wh, "b", 5, x=2.0)
    path = snapshot.publish(wh).path
    assert path is not None and path.is_relative_to(tmp_path / "home") and not (tmp_path / "home" / "parquet").exists()
    views, snap = _both(wh, PER_SOURCE)
    assert snap == views == [("a", 10, 10.0, 0), ("b", 5, 10.0, 0)]
    time.sleep(0.01)  # the in-memory store's times are its only change tag
    _put(wh, "a", 10, x=3.0)  # rewritten with the same size
    wh.file_for("frames", "b").unlink()
    _put(wh, "c", 2)
    views, snap = _both(wh, PER_SOURCE)
    assert snap == views == [("a", 10, 30.0, 0), ("c", 2, 2.0, 0)]
    assert snapshot.publish(wh).inserted_files == 2 and _both(wh, PER_SOURCE)[1] == views


def test_an_unreadable_snapshot_falls_back_to_the_views_and_is_rebuilt(wh):
    path = snapshot.publish(wh).path
    with duckdb.connect(str(path)) as con:  # an older layout: `_files` without the change-tag column
        con.execute("alter table _files drop column tag")
    assert run_query(wh, "select count(*) n from frames").to_pylist() == [{"n": 15}]
    assert snapshot.publish(wh).inserted_files == 2
    path.with_name("frames-000009.duckdb").write_bytes(b"not a database")
    os.replace(path.parent / "current.duckdb", path.parent / "old-link")
    os.symlink("frames-000009.duckdb", path.parent / "current.duckdb")
    assert run_query(wh, "select count(*) n from frames").to_pylist() == [{"n": 15}]
    assert snapshot.publish(wh).inserted_files == 2
    assert _both(wh, PER_SOURCE) == ([("a", 10, 10.0, 0), ("b", 5, 10.0, 0)],) * 2
