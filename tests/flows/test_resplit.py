"""flows/resplit.py, run in this process (Prefect's temporary server), on warehouses written as
Parquet with the contract; assertions in SQL."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from affectflow.cli import main
from data_contracts import CONTRACT_VERSION, FRAMES, LABELS, VIDEOS
from flows.resplit import ResplitParams, deployment, resplit
from tasks.publish_split import SplitRejected
from tasks.split import SplitError
from tests.research_split import research_split
from warehouse import Warehouse
from warehouse.catalog import connect
from warehouse.writer import rows_to_table, write_atomic

NOW = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
CLASSES = {"angry": 40, "sad": 30, "happy": 16, "neutral": 12}


def write_source(home: Path, key: str, items: list[tuple[str, str | None, str | None]], n_frames: int = 3,
                 path_of=None, frame_of=None, no_face: frozenset[str] = frozenset()) -> Warehouse:
    """One source's videos, labels and frames. items: (video_id, emotion, subject_id).
    `frame_of(video_id)`: the first frame number (an image row's row number in its CSV);
    videos in `no_face` have `success` 0 on every frame, as OpenFace writes them."""
    wh = Warehouse(home).init()
    path_of = path_of or (lambda vid: f"/data/{key}/{vid}.mp4")
    frame_of = frame_of or (lambda vid: 0)
    videos, labels, frames = [], [], []
    for vid, emotion, subject in items:
        videos.append({"source_id": key, "video_id": vid, "path": path_of(vid), "kind": "video",
                       "n_frames": n_frames, "n_face_frames": n_frames, "face_rate": 1.0,
                       "extractor": "mediapipe", "extractor_version": "t", "extractor_config": "{}",
                       "config_hash": "x", "contract_version": CONTRACT_VERSION, "run_id": "r0",
                       "extracted_at": NOW})
        labels.append({"video_id": vid, "source_id": key, "emotion": emotion, "subject_id": subject,
                       "label_source": "folder" if emotion else "none"})
        first = frame_of(vid)
        frames += [{"source_id": key, "video_id": vid, "frame": first + i, "face_id": 0, "timestamp": i / 25,
                    "success": 0 if vid in no_face else 1, "confidence": 0.9} for i in range(n_frames)]
    write_atomic(wh.file_for("videos", key), rows_to_table(VIDEOS, videos))
    write_atomic(wh.file_for("labels", key), rows_to_table(LABELS, labels))
    write_atomic(wh.file_for("frames", key), rows_to_table(FRAMES, frames))
    return wh


def _items(prefix: str = "", sizes: dict[str, int] = CLASSES, unlabelled: int = 4) -> list:
    items = [(f"{prefix}{c}{i:03d}", c, f"s{i % 9}") for c, n in sizes.items() for i in range(n)]
    return items + [(f"{prefix}none{i}", None, f"s{i}") for i in range(unlabelled)]


def _sql(wh: Warehouse, sql: str) -> list[tuple]:
    con = connect(wh)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _current(wh: Warehouse) -> str:
    return _sql(wh, "SELECT DISTINCT split_id FROM current_split")[0][0]


def test_resplit_publishes_a_version_visible_in_sql(af_home: Path) -> None:
    wh = write_source(af_home, "a", _items())
    result = resplit(ResplitParams())
    assert result["status"] == "published" and result["contract_passed"]
    runs = _sql(wh, "SELECT split_id, status, strategy, seed, units, rows, test_rows FROM split_runs")
    assert len(runs) == 1 and runs[0][1:5] == ("published", "grouped", 42, 102)
    assert _current(wh) == result["split_id"]
    per_video = _sql(wh, "SELECT count(*), count(DISTINCT video_id), count(frame) FROM current_split")
    assert per_video == [(102, 102, 0)]
    summary = dict(_sql(wh, f"SELECT partition, sum(rows) FROM split_summary WHERE split_id = '{result['split_id']}' GROUP BY ALL"))
    assert summary["test"] == runs[0][6] and sum(summary.values()) == 102
    unlabelled = _sql(wh, "SELECT DISTINCT partition FROM current_split WHERE emotion IS NULL")
    assert unlabelled == [("pretrain",)]


def test_same_data_and_parameters_make_no_new_version(af_home: Path) -> None:
    wh = write_source(af_home, "a", _items())
    first = resplit(ResplitParams())
    again = resplit(ResplitParams())
    assert again["status"] == "unchanged" and again["split_id"] == first["split_id"]
    assert _sql(wh, "SELECT count(*) FROM split_runs") == [(1,)]
    assert len(wh.files("splits")) == 1


def test_stable_mode_keeps_assignments_and_places_new_units(af_home: Path) -> None:
    wh = write_source(af_home, "a", _items())
    first = resplit(ResplitParams())
    write_source(af_home, "b", _items("new", {"angry": 10, "happy": 6}, unlabelled=0))
    second = resplit(ResplitParams())
    assert second["status"] == "published" and second["split_id"] != first["split_id"]
    moved = _sql(wh, f"""SELECT count(*) FROM splits a JOIN splits b USING (video_id)
        WHERE a.split_id = '{first['split_id']}' AND b.split_id = '{second['split_id']}'
        AND a.partition <> b.partition""")
    assert moved == [(0,)]
    assert _sql(wh, "SELECT count(*) FROM current_split") == [(118,)]
    previous = _sql(wh, f"SELECT previous_split_id FROM split_runs WHERE split_id = '{second['split_id']}'")
    assert previous == [(first["split_id"],)]


def test_reshuffle_takes_a_new_seed_and_keeps_the_test_holdout(af_home: Path) -> None:
    wh = write_source(af_home, "a", _items())
    first = resplit(ResplitParams())
    second = resplit(ResplitParams(mode="reshuffle"))
    assert second["seed"] == 43 and second["status"] == "published"
    tests = _sql(wh, f"""SELECT split_id, list(video_id ORDER BY video_id) FROM splits
        WHERE partition = 'test' AND split_id IN ('{first['split_id']}', '{second['split_id']}') GROUP BY split_id""")
    assert tests[0][1] == tests[1][1]


def test_failing_contract_is_recorded_and_keeps_the_previous_split(af_home: Path) -> None:
    wh = write_source(af_home, "a", _items())
    first = resplit(ResplitParams(test_fraction=0.3))
    # stable mode cannot shrink the test holdout: the kept test units are off target
    with pytest.raises(SplitRejected, match="class_balance"):
        resplit(ResplitParams(test_fraction=0.15))
    rejected = _sql(wh, "SELECT status, message, contract_result FROM split_runs WHERE status = 'rejected'")
    assert len(rejected) == 1 and "off target" in rejected[0][1] and '"passed": false' in rejected[0][2]
    assert _current(wh) == first["split_id"]
    assert len(wh.files("splits")) == 1


def test_a_version_without_its_record_is_never_current(af_home: Path) -> None:
    wh = write_source(af_home, "a", _items())
    first = resplit(ResplitParams())
    stray = wh.file_for("splits", "99999999T000000000000Z-halfdone")
    stray.write_bytes(wh.files("splits")[0].read_bytes())  # a splits file, no split_runs record
    assert _current(wh) == first["split_id"]


def test_row_strategy_reproduces_the_research_table_from_the_warehouse(af_home: Path) -> None:
    """OpenFace CSVs of images: one video_id per CSV row; source order is the CSV, then frame."""
    sizes = {"angry": 200, "sad": 200, "happy": 45, "neutral": 128}
    for emotion, n in sizes.items():
        write_source(af_home, emotion, [(f"{emotion}{i:03d}", emotion, None) for i in range(n)], n_frames=1,
                     path_of=lambda vid, e=emotion: f"/data/{e}.csv")
    result = resplit(ResplitParams(strategy="row", seed=42, test_fraction=0))
    rows = _sql(Warehouse(af_home), f"""SELECT partition, emotion, rows FROM split_summary
        WHERE split_id = '{result['split_id']}'""")
    counts = {(p, e): n for p, e, n in rows}
    assert sum(n for (p, _), n in counts.items() if p == "pretrain") == 400
    assert [counts[("ssl", e)] for e in ("angry", "sad", "neutral", "happy")] == [42, 42, 27, 10]
    assert [counts[("classifier", e)] for e in ("angry", "sad", "neutral", "happy")] == [12, 12, 8, 2]
    assert [counts[("finetune", e)] for e in ("angry", "sad", "neutral", "happy")] == [6, 6, 4, 2]


RESEARCH_SIZES = {"angry": 200, "sad": 200, "happy": 45, "neutral": 128}


def _research_split(csv_rows: dict[str, list[str]], seed: int = 42) -> dict[str, set[str]]:
    """The research code's split of one CSV per emotion (`tests/research_split.py`)."""
    ids = [v for e in csv_rows for v in csv_rows[e]]
    return research_split(ids, [e for e in csv_rows for _ in csv_rows[e]], seed)


def _image_csvs(home: Path, no_face_every: int, sizes: dict[str, int] = RESEARCH_SIZES) -> dict[str, list[str]]:
    """One OpenFace CSV of images per emotion (a video_id per row, `frame` its row number), every
    `no_face_every`-th row without a face (`success` 0). Returns each CSV's video ids in file order."""
    csv_rows = {}
    for emotion, n in sizes.items():
        ids = [f"{(i * 7919) % 1000:03d}{emotion}{i}" for i in range(n)]  # id order is not file order
        row_of = {vid: i for i, vid in enumerate(ids)}
        write_source(home, emotion, [(vid, emotion, None) for vid in ids], n_frames=1,
                     path_of=lambda vid, e=emotion: f"/data/{e}.csv", frame_of=row_of.__getitem__,
                     no_face=frozenset(ids[::no_face_every]))
        csv_rows[emotion] = ids
    return csv_rows


def test_row_strategy_is_the_research_split_row_for_row_with_no_face_rows(af_home: Path) -> None:
    csv_rows = _image_csvs(af_home, no_face_every=23)
    wh = Warehouse(af_home)
    assert _sql(wh, "SELECT count(*) FROM frames WHERE success = 0") == [(26,)]
    result = resplit(ResplitParams(strategy="row", seed=42, test_fraction=0))
    got = _sql(wh, f"SELECT video_id, partition FROM splits WHERE split_id = '{result['split_id']}'")
    research = _research_split(csv_rows)
    assert len(got) == sum(RESEARCH_SIZES.values())  # the no-face rows are assigned too
    assert {p: {v for v, q in got if q == p} for p in research} == research
    assert len(research["pretrain"]) == 400


def test_row_strategy_holds_out_a_stratified_test_set_by_default(af_home: Path) -> None:
    # happy has 60 rows here: the research's 45 would leave 38 after the holdout, fewer than the 44 its
    # two stratified splits need, and the class would go to pretrain whole (reported as too small)
    csv_rows = _image_csvs(af_home, no_face_every=23, sizes={**RESEARCH_SIZES, "happy": 60})
    result = resplit(ResplitParams(strategy="row", seed=42))
    wh = Warehouse(af_home)
    test = dict(_sql(wh, f"""SELECT emotion, count(*) FROM splits WHERE split_id = '{result['split_id']}'
        AND partition = 'test' GROUP BY 1"""))
    assert test == {"angry": 30, "sad": 30, "happy": 9, "neutral": 19}  # 15% of each CSV's rows
    held_out = _test_ids(wh, result["split_id"])
    rest = {e: [v for v in ids if v not in held_out] for e, ids in csv_rows.items()}
    got = _sql(wh, f"SELECT video_id, partition FROM splits WHERE split_id = '{result['split_id']}' AND partition <> 'test'")
    research = _research_split(rest)
    assert {p: {v for v, q in got if q == p} for p in research} == research


def _test_ids(wh: Warehouse, split_id: str) -> set[str]:
    return {v for (v,) in _sql(wh, f"SELECT video_id FROM splits WHERE split_id = '{split_id}' AND partition = 'test'")}


def test_group_by_subject_keeps_each_subject_in_one_partition(af_home: Path) -> None:
    # posed data: every subject shows every emotion, so no subject has a meaningful "label"
    items = [(f"v{i:03d}", ("angry", "sad", "happy", "neutral")[i % 4], f"s{i // 8}") for i in range(240)]
    wh = write_source(af_home, "a", items)
    result = resplit(ResplitParams(group_by="subject"))
    assert result["status"] == "published"
    split = f"SELECT s.*, l.subject_id FROM splits s JOIN labels l USING (video_id) WHERE s.split_id = '{result['split_id']}'"
    per_subject = _sql(wh, f"SELECT max(n) FROM (SELECT subject_id, count(DISTINCT partition) n FROM ({split}) GROUP BY 1)")
    assert per_subject == [(1,)]
    # the unit stays the video: 240 units, every emotion in every partition, whole subjects in test
    assert _sql(wh, f"SELECT count(DISTINCT unit_id), count(*) FILTER (WHERE unit_id <> video_id) FROM ({split})") == [(240, 0)]
    per_partition = _sql(wh, f"SELECT partition, count(DISTINCT emotion), count(DISTINCT subject_id) FROM ({split}) GROUP BY 1")
    assert {p: n for p, n, _ in per_partition} == {p: 4 for p in ("test", "pretrain", "ssl", "classifier", "finetune")}
    assert dict((p, s) for p, _, s in per_partition)["test"] == 5  # 15% of 30 subjects: 4.5, the tie to test


def test_a_refused_resplit_names_the_option_to_change(af_home: Path) -> None:
    write_source(af_home, "a", _items())
    first = resplit(ResplitParams())
    small_data = {"pretrain_fraction": 0.0, "ssl_fraction": 0.25, "classifier_fraction": 0.5, "finetune_fraction": 0.25}
    with pytest.raises(SplitRejected, match="--mode reshuffle"):
        resplit(ResplitParams(**small_data))
    with pytest.raises(SplitRejected, match="leave out --test-fraction"):
        resplit(ResplitParams(mode="reshuffle", test_fraction=0.3, **small_data))
    through = resplit(ResplitParams(mode="reshuffle", **small_data))  # leaving it out keeps the holdout
    assert through["status"] == "published"
    wh = Warehouse(af_home)
    assert _test_ids(wh, through["split_id"]) == _test_ids(wh, first["split_id"])


def test_group_by_subject_needs_subject_ids(af_home: Path) -> None:
    write_source(af_home, "a", [(f"v{i}", "angry" if i % 2 else "sad", None) for i in range(40)])
    with pytest.raises(SplitError, match="no subject_id"):
        resplit(ResplitParams(group_by="subject"))


def test_dry_run_writes_nothing(af_home: Path) -> None:
    wh = write_source(af_home, "a", _items())
    result = resplit(ResplitParams(dry_run=True))
    assert result["status"] == "dry-run" and result["contract_passed"]
    assert wh.files("split_runs") == [] and wh.files("splits") == []


def test_no_labelled_units_fail_with_a_message(af_home: Path) -> None:
    write_source(af_home, "a", [(f"v{i}", None, None) for i in range(10)])
    with pytest.raises(SplitError, match="no labelled units"):
        resplit(ResplitParams())


def test_two_runs_at_once_make_one_version(af_home: Path) -> None:
    wh = write_source(af_home, "a", _items())
    code = ("from tasks.publish_split import publish_split; from tasks.split import SplitSpec; "
            "import sys; print(publish_split(sys.argv[1], SplitSpec()).status)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(af_home)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    statuses = sorted(p.communicate(timeout=300)[0].strip() for p in procs)
    assert statuses == ["published", "unchanged"]
    assert _sql(wh, "SELECT count(*), count(DISTINCT fingerprint) FROM split_runs") == [(1, 1)]
    assert not list(wh.table_dir("splits").glob(".*.tmp"))


@pytest.mark.parametrize("params, message", [
    ({"ssl_fraction": 0.5}, "must sum to 1"),
    ({"pretrain_fraction": 1.5}, "less than 1"),
    ({"test_fraction": -0.1}, "greater than or equal to 0"),
    ({"group_by": "session"}, "'video' or 'subject'"),
    ({"strategy": "frames"}, "'grouped' or 'row'"),
])
def test_bad_parameters_are_rejected_by_the_model(params: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ResplitParams(**params)


def test_deployment_is_nightly_in_the_configured_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFFECTFLOW_TIMEZONE", "Europe/Berlin")
    d = deployment()
    assert (d.flow_name, d.name, d.enforce_parameter_schema) == ("resplit", "nightly", True)
    schedule = d.schedules[0].schedule
    assert (schedule.cron, schedule.timezone) == ("0 2 * * *", "Europe/Berlin")


def test_cli_resplit_and_splits(af_home: Path, capsys: pytest.CaptureFixture,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")  # the command would set it for the process
    write_source(af_home, "a", _items())
    assert main(["resplit", "--ssl-fraction", "0.5"]) == 2
    assert "must sum to 1" in capsys.readouterr().err
    assert main(["splits"]) == 1
    assert "no published split yet" in capsys.readouterr().err
    assert main(["resplit"]) == 0
    assert main(["splits"]) == 0
    out = capsys.readouterr().out
    assert "partition" in out and "angry" in out and "FROM split_summary" in out
    assert main(["splits", "--list"]) == 0
    assert "published" in capsys.readouterr().out
