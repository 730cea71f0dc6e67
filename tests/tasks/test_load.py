"""Leftovers of killed writers are swept; files of live writers never are."""

import os
import time

from data_contracts import FRAMES
from tasks.load import file_lock, item_lock, sweep_orphans
from warehouse import Warehouse
from warehouse.writer import PartitionWriter


def test_sweep_spares_a_live_writer_and_removes_an_abandoned_one(tmp_path):
    wh = Warehouse(tmp_path).init()
    with item_lock(wh, "abc"):
        writer = PartitionWriter(wh.file_for("frames", "abc"), FRAMES.arrow_schema())
        assert sweep_orphans(wh) == 0  # another run starting now must not touch it
        assert writer._tmp.exists()
    writer._writer.close()  # the writer "dies" without committing
    assert sweep_orphans(wh) == 1
    assert not writer._tmp.exists()


def test_sweep_removes_files_whose_unit_never_got_its_videos_file(tmp_path):
    wh = Warehouse(tmp_path).init()
    orphans = [wh.file_for(table, "shard-def") for table in ("frames", "labels")]
    for orphan in orphans:
        orphan.write_bytes(b"whole file, but its unit never got a videos file (the commit mark)")
    committed = wh.file_for("frames", "ghi")
    committed.write_bytes(b"x")
    wh.file_for("videos", "ghi").write_bytes(b"x")
    with file_lock(wh, "shard-def"):  # a run committing that unit right now
        assert sweep_orphans(wh) == 0 and all(o.exists() for o in orphans)
    assert sweep_orphans(wh) == 2 and not any(o.exists() for o in orphans)
    assert committed.exists()


def test_stale_temporary_files_of_other_tables(tmp_path):
    wh = Warehouse(tmp_path).init()
    fresh = wh.table_dir("runs") / ".r1.parquet.1234.tmp"
    stale = wh.table_dir("runs") / ".r2.parquet.5678.tmp"
    fresh.write_bytes(b"x")
    stale.write_bytes(b"x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert sweep_orphans(wh) == 1
    assert fresh.exists() and not stale.exists()
