"""Read-only SQL: SQL unit tests on small tables, refusals, time limits."""

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


def test_time_limit(wh):
    with pytest.raises(QueryError, match="time limit"):
        run_query(wh, "select count(*) from range(1000000000) a, range(1000) b", timeout_s=0.5)
