"""Read-only SQL: SQL unit tests on small tables, refusals, hostile statements, time limits."""

import os
import re

import pytest

from data_contracts import VIDEOS
from tasks.load import now
from warehouse import Warehouse
from warehouse.query import QueryError, run_query
from warehouse.writer import rows_to_table, write_atomic


def _video(source_id, n, faces):
    return {"source_id": source_id, "video_id": source_id, "path": f"/m/{source_id}.mp4", "kind": "video",
            "n_frames": n, "n_face_frames": faces, "face_rate": faces / n, "extractor": "mediapipe",
            "extractor_version": "1", "extractor_config": "{}", "config_hash": "c", "contract_version": "1",
            "run_id": "r", "extracted_at": now()}


@pytest.fixture()
def wh(tmp_path):
    wh = Warehouse(tmp_path).init()
    for sid, n, faces in (("a", 10, 5), ("b", 4, 4)):
        write_atomic(wh.file_for("videos", sid), rows_to_table(VIDEOS, [_video(sid, n, faces)]))
    return wh


def test_small_tables_in_expected_rows_out(wh):
    rows = run_query(wh, "select video_id, n_frames from videos order by 1").to_pylist()
    assert rows == [{"video_id": "a", "n_frames": 10}, {"video_id": "b", "n_frames": 4}]
    total = run_query(wh, "with t as (select sum(n_face_frames) f, sum(n_frames) n from videos) select f / n r from t")
    assert total.to_pylist()[0]["r"] == pytest.approx(9 / 14)


def test_empty_tables_still_have_columns(tmp_path):
    wh = Warehouse(tmp_path).init()
    assert run_query(wh, "select count(*) n, avg(success) s from frames").to_pylist() == [{"n": 0, "s": None}]


@pytest.mark.parametrize(
    "sql, message",
    [("selec 1", "SQL error: Parser Error"), ("drop view videos", "refused: DROP"),
     ("delete from videos", "refused: DELETE"), ("copy videos to '/tmp/x.csv'", "refused: COPY"),
     ("attach '/tmp/x.db'", "refused: ATTACH"), ("create table t as select 1", "refused: CREATE"),
     ("select 1; insert into videos select * from videos", "refused: INSERT"),
     ("select * from read_csv('/etc/passwd')", "Permission Error"), ("", "empty query")],
)
def test_refusals_and_errors(wh, sql, message):
    with pytest.raises(QueryError, match=message):
        run_query(wh, sql)
    assert run_query(wh, "select count(*) n from videos").to_pylist() == [{"n": 2}]


# Statements an attacker (or a careless paste) might send. {root} is the Parquet tree, {home} the
# warehouse home, {cwd} the working directory. Each must be refused or fail with the given
# message, and leave every file of the home and of the working directory as it was.
HOSTILE = [
    # writes and DDL
    ("drop view videos", "refused: DROP"), ("drop table if exists frames", "refused: DROP"),
    ("delete from videos", "refused: DELETE"), ("truncate videos", "refused: DELETE"),
    ("update videos set n_frames = 0", "refused: UPDATE"),
    ("insert into videos select * from videos", "refused: INSERT"),
    ("create table t as select 1", "refused: CREATE"),
    ("create or replace view videos as select 1 a", "refused: CREATE"),
    ("create macro m() as 1", "refused: CREATE"),
    ("create secret s (type s3, key_id 'k', secret 's')", "refused: CREATE"),
    ("create persistent secret s (type s3, key_id 'k', secret 's')", "refused: CREATE"),
    ("alter view videos rename to v2", "refused: ALTER"), ("comment on view videos is 'x'", "refused: ALTER"),
    ("merge into videos using videos v on true when matched then delete", "refused: MERGE"),
    # files in and out
    ("copy videos to '{root}/videos/x.parquet'", "refused: COPY"),
    ("copy (select 1) to '{cwd}/x.csv'", "refused: COPY"),
    ("copy videos from '{root}/videos/_schema.parquet'", "refused: COPY"),
    ("export database '{cwd}/dump'", "refused: EXPORT"), ("import database '{cwd}/dump'", "refused: PRAGMA"),
    ("attach '{cwd}/x.db' as x", "refused: ATTACH"), ("attach ':memory:' as m", "refused: ATTACH"),
    ("attach '{home}/warehouse.duckdb' as w", "refused: ATTACH"), ("detach snap", "refused: DETACH"),
    ("use memory", "refused: SET"),
    # settings, extensions, session state
    ("set enable_external_access = true", "refused: SET"), ("reset allowed_directories", "refused: SET"),
    ("set allowed_directories = ['/']", "refused: SET"), ("set temp_directory = '{cwd}'", "refused: SET"),
    ("set lock_configuration = false", "refused: SET"), ("set variable x = 1", "refused: SET"),
    ("pragma enable_profiling", "refused: PRAGMA"), ("pragma profiling_output = '{cwd}/p.json'", "refused: SET"),
    ("call pragma_version()", "refused: CALL"), ("checkpoint", "refused: CALL"),
    ("vacuum", "refused: VACUUM"), ("analyze", "refused: VACUUM"),
    ("install httpfs", "refused: LOAD"), ("load httpfs", "refused: LOAD"),
    ("load '{cwd}/evil.duckdb_extension'", "refused: LOAD"),
    ("prepare p as copy videos to '{cwd}/x.csv'", "refused: PREPARE"), ("execute p", "refused: EXECUTE"),
    ("begin transaction", "refused: TRANSACTION"),
    # a harmless statement first, then a harmful one
    ("select 1; drop view videos", "refused: DROP"), ("select 1; copy videos to '{cwd}/x.csv'", "refused: COPY"),
    ("select 1; set enable_external_access = true", "refused: SET"),
    # EXPLAIN ANALYZE runs what it explains, in every spelling
    ("explain analyze copy (select * from videos where false) to '{root}/videos/x.parquet'", "EXPLAIN ANALYZE"),
    ("explain analyze copy (select 1) to '{cwd}/.tmp/x.csv'", "EXPLAIN ANALYZE"),
    ("EXPLAIN ANALYSE select 1", "EXPLAIN ANALYZE"), ("explain /* c */ analyze select 1", "EXPLAIN ANALYZE"),
    ("explain (analyze) copy videos to '{root}/videos/x.parquet'", "EXPLAIN ANALYZE"),
    ("explain (format json, analyze true) insert into videos select * from videos", "EXPLAIN ANALYZE"),
    ("explain (analyze false) select 1", "EXPLAIN ANALYZE"),
    ("-- note\nexplain\tanalyze create table t as select 1", "EXPLAIN ANALYZE"),
    ("select 1; explain analyze copy (select 1) to '{cwd}/x.csv'", "EXPLAIN ANALYZE"),
    ("explain copy videos to '{cwd}/x.csv'", "refused: EXPLAIN of COPY"),
    ("explain insert into videos select * from videos", "refused: EXPLAIN of INSERT"),
    ("explain create table t as select 1", "refused: EXPLAIN of CREATE"),
    # reading outside the Parquet tree
    ("select * from read_csv('/etc/passwd')", "Permission Error"),
    ("select * from read_text('/etc/hostname')", "Permission Error"),
    ("select * from read_text('/proc/self/environ')", "Permission Error"),
    ("select * from read_blob('{root}/../warehouse.duckdb')", "Permission Error"),
    ("select * from read_blob('{root}/videos/../../index/paths/x')", "Permission Error"),
    ("select * from read_json('{cwd}/x.json')", "Permission Error"),
    ("select * from sniff_csv('/etc/passwd')", "Permission Error"), ("select * from glob('/etc/*')", "Permission Error"),
    ("select * from glob('{home}/**')", "Permission Error"),
    ("select * from read_csv('https://example.com/x.csv')", "Permission Error"),
    ("select * from read_parquet('s3://bucket/x.parquet')", "Permission Error"),
    ("select * from query('copy videos to ''{cwd}/x.csv''')", "SQL error: Parser Error"),
]


def _files(*folders):
    """Every file under `folders`, with its size and modification time."""
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                  for folder in folders for p in folder.rglob("*") if p.is_file())


def test_hostile_statements_are_refused_and_change_nothing(wh, tmp_path, monkeypatch):
    assert len(HOSTILE) >= 50
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    run_query(wh, "select 1")
    before = _files(wh.home, cwd)
    names = {"root": wh.root, "home": wh.home, "cwd": cwd}
    for template, message in HOSTILE:
        sql = template.format(**names)
        with pytest.raises(QueryError, match=re.escape(message)):
            run_query(wh, sql)
        assert _files(wh.home, cwd) == before, sql
    assert run_query(wh, "select count(*) n from videos").to_pylist() == [{"n": 2}]


def test_explain_without_analyze_is_allowed(wh):
    for sql in ("explain select * from videos", "explain (format json) select count(*) from frames",
                "explain describe videos", "explain select 'analyze' a"):
        assert run_query(wh, sql).to_pylist()[0]["explain_key"] == "physical_plan", sql


def test_settings_name_no_path_outside_the_home(wh, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = run_query(wh, "select name, value from duckdb_settings()").to_pylist()
    paths = [(r["name"], path) for r in settings for path in re.findall(r"(?:^|[\[ ,])(/[^\],]+)", r["value"] or "")]
    assert ("allowed_directories", str(wh.root) + "/") in paths
    assert [(name, path) for name, path in paths if not path.startswith(str(wh.home) + os.sep)] == []
    temp = run_query(wh, "select current_setting('temp_directory') t").to_pylist()[0]["t"]
    assert temp.startswith(str(wh.home / "tmp") + os.sep), temp  # not `.tmp` in the working directory


def test_time_limit(wh):
    with pytest.raises(QueryError, match="time limit"):
        run_query(wh, "select count(*) from range(1000000000) a, range(1000) b", timeout_s=0.5)
