"""Leftovers of killed writers are swept; files of live writers never are. Quarantine copies
only files of the source, and only while the item is bad."""

import os
import time
from pathlib import Path

from data_contracts import FRAMES
from tasks.load import clear_quarantine, file_lock, item_lock, quarantine_item, sweep_orphans
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


def test_quarantine_copies_only_regular_files_of_the_source(tmp_path):
    wh = Warehouse(tmp_path / "home").init()
    source = tmp_path / "source"
    source.mkdir()
    bad, outside = source / "bad.mp4", tmp_path / "secret.txt"
    bad.write_bytes(b"not a video")
    outside.write_text("not part of the source")
    (source / "link.mp4").symlink_to(outside)
    os.mkfifo(source / "pipe.mp4")
    copied = quarantine_item(wh, bad, "extract", "cannot open video", "r", source_root=source)
    assert Path(copied["copy_path"]).read_bytes() == b"not a video"
    for path, root in ((outside, source), (source / "link.mp4", source), (source / "pipe.mp4", source),
                       (Path("/etc/hostname"), None), (bad, None)):
        row = quarantine_item(wh, path, "label", "refused", "r", source_root=root)
        assert row["copy_path"] is None, path
    assert [p.name for p in (wh.home / "quarantine" / "files").iterdir()] == []  # bad's copy went too: no longer current
    single = quarantine_item(wh, bad, "extract", "cannot open video", "r", source_root=bad)  # a one-file source
    assert single["copy_path"] is not None


def test_quarantine_copy_goes_when_the_item_later_loads(tmp_path):
    wh = Warehouse(tmp_path / "home").init()
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"garbage first")
    row = quarantine_item(wh, path, "extract", "cannot open video", "r", source_root=tmp_path)
    assert Path(row["copy_path"]).exists()
    clear_quarantine(wh, path)  # what a unit's commit does for each member that loaded
    assert not wh.file_for("quarantine", row["item_id"]).exists()
    assert not Path(row["copy_path"]).exists()
