"""SQL unit tests of the derived views (warehouse/views/*.sql): small tables in, expected rows out."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from data_contracts import FRAMES, LABELS, VIDEOS
from data_contracts.predictions import PREDICTIONS
from data_contracts.splits import SPLIT_RUNS, SPLITS
from data_contracts.training import METRICS, TRAINING_RUNS
from warehouse import Warehouse
from warehouse.catalog import connect
from warehouse.writer import rows_to_table, write_atomic

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _write(wh: Warehouse, table, key: str, rows: list[dict]) -> None:
    write_atomic(wh.file_for(table.name, key), rows_to_table(table, rows))


def _rows(wh: Warehouse, sql: str) -> list[tuple]:
    con = connect(wh)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture()
def wh(tmp_path) -> Warehouse:
    return Warehouse(tmp_path).init()


def _video(video_id: str, n: int, faces: int) -> dict:
    return {"source_id": video_id, "video_id": video_id, "path": f"/m/{video_id}.mp4", "kind": "video",
            "n_frames": n, "n_face_frames": faces, "face_rate": faces / n, "extractor": "openface-csv",
            "extractor_version": "1", "extractor_config": "{}", "config_hash": "c", "contract_version": "1.0.0",
            "run_id": "b1", "extracted_at": T0}


def _frame(video_id: str, frame: int, success: int, confidence=None, au12=None, au06=None) -> dict:
    return {"source_id": video_id, "video_id": video_id, "frame": frame, "face_id": 0, "timestamp": frame / 25,
            "success": success, "confidence": confidence, "AU12_r": au12, "AU06_r": au06}


def _prediction(run_id: str, video_id: str, frame: int | None, emotion: str | None, minutes: int,
                stress: float | None = None, level: str = "frame") -> dict:
    probs = json.dumps({emotion: 1.0}) if emotion else None
    return {"run_id": run_id, "video_id": video_id, "path": f"/new/{video_id}.mp4", "level": level,
            "frame": frame, "face_id": 0, "window_start": frame, "window_end": frame, "emotion_probs": probs,
            "dominant_emotion": emotion, "dominant_prob": 1.0 if emotion else None, "stress_prob": stress,
            "created_at": T0 + dt.timedelta(minutes=minutes)}


def _video_summary_tables(wh: Warehouse) -> None:
    _write(wh, VIDEOS, "v", [_video("a", 4, 3), _video("b", 2, 0)])
    _write(wh, FRAMES, "a", [_frame("a", 0, 1, 0.9, 1.0, 0.5), _frame("a", 1, 1, 0.8, 2.0, 1.5),
                             _frame("a", 2, 0), _frame("a", 3, 1, 0.7, 3.0, None)])
    _write(wh, FRAMES, "b", [_frame("b", 0, 0), _frame("b", 1, 0)])
    _write(wh, LABELS, "l", [{"video_id": "a", "source_id": "a", "emotion": "happy", "label_source": "folder"}])
    old = [_prediction("r_old", "a", f, "sad", 0) for f in range(4)]
    new = [_prediction("r_new", "a", 0, "happy", 5, 0.2), _prediction("r_new", "a", 1, "sad", 5, 0.4),
           _prediction("r_new", "a", 2, None, 5), _prediction("r_new", "a", 3, "happy", 5, 0.6),
           _prediction("r_new", "a", None, "angry", 5, 0.9, level="window")]  # window rows are not counted
    only_predicted = [_prediction("r_new", "c", 0, "sad", 6, 0.5), _prediction("r_new", "c", 1, None, 6),
                      _prediction("r_new", "c", 2, "angry", 6, 0.7)]
    _write(wh, PREDICTIONS, "old", old)
    _write(wh, PREDICTIONS, "new", new + only_predicted)


def test_video_summary(wh: Warehouse) -> None:
    _video_summary_tables(wh)
    rows = _rows(wh, """SELECT video_id, path, kind, label, frames, face_frames, round(face_rate, 4),
            round(mean_confidence, 4), mean_AU12_r, mean_AU06_r, mean_AU01_r, predicted_by, predicted_emotion,
            round(predicted_share, 4), round(mean_stress_prob, 4)
        FROM video_summary ORDER BY video_id""")
    assert rows == [
        ("a", "/m/a.mp4", "video", "happy", 4, 3, 0.75, 0.8, 2.0, 1.0, None, "r_new", "happy", 0.6667, 0.4),
        ("b", "/m/b.mp4", "video", None, 2, 0, 0.0, None, None, None, None, None, None, None, None),
        # predicted only: counts come from the predictions; ties go to the first emotion by name
        ("c", "/new/c.mp4", None, None, 3, 2, 0.6667, None, None, None, None, "r_new", "angry", 0.5, 0.6),
    ]


def test_video_summary_on_an_empty_warehouse(wh: Warehouse) -> None:
    assert _rows(wh, "SELECT count(*) FROM video_summary") == [(0,)]


def _split_run(split_id: str, status: str, minutes: int) -> dict:
    row = {"split_id": split_id, "created_at": T0 + dt.timedelta(minutes=minutes), "status": status,
           "strategy": "grouped", "mode": "stable", "group_by": "video", "seed": 0, "params": "{}",
           "fingerprint": "f", "contract_result": "{}", "units": 3, "rows": 3}
    return row | {f"{p}_rows": 0 for p in ("test", "pretrain", "ssl", "classifier", "finetune")}


def _split_rows(split_id: str, assignments: list[tuple[str, str, str | None]]) -> list[dict]:
    return [{"split_id": split_id, "unit_id": v, "video_id": v, "partition": p, "emotion": e}
            for v, p, e in assignments]


def test_current_split_and_split_summary(wh: Warehouse) -> None:
    _write(wh, SPLIT_RUNS, "runs", [_split_run("s_old", "published", 0), _split_run("s_new", "published", 5),
                                    _split_run("s_bad", "rejected", 9)])
    _write(wh, SPLITS, "s_old", _split_rows("s_old", [("a", "test", "happy"), ("b", "classifier", "sad")]))
    _write(wh, SPLITS, "s_new", _split_rows("s_new", [("a", "classifier", "happy"), ("b", "classifier", "happy"),
                                                      ("c", "pretrain", None)]))
    _write(wh, SPLITS, "s_bad", _split_rows("s_bad", [("a", "test", "happy")]))
    assert _rows(wh, "SELECT DISTINCT split_id FROM current_split") == [("s_new",)]
    assert _rows(wh, "SELECT * FROM split_summary ORDER BY split_id, partition, emotion") == [
        ("s_bad", "test", "happy", 1, 1),
        ("s_new", "classifier", "happy", 2, 2),
        ("s_new", "pretrain", "(unlabelled)", 1, 1),
        ("s_old", "classifier", "sad", 1, 1),
        ("s_old", "test", "happy", 1, 1),
    ]


def _training_run(run_id: str, minutes: int, status: str = "completed") -> dict:
    return {"run_id": run_id, "split_id": "s1", "status": status, "started_at": T0,
            "finished_at": T0 + dt.timedelta(minutes=minutes), "params": "{}", "encoder": "mlp",
            "loss_weighting": "fixed", "stages": "supervised", "tasks": "emotion", "device": "cpu",
            "n_features": 3, "train_units": 10, "test_units": 4, "epochs_run": 2,
            "checkpoint": f"/runs/{run_id}/model.pt", "contract_version": "1.0.0",
            "error": None if status == "completed" else "boom"}


def test_run_summary(wh: Warehouse) -> None:
    _write(wh, TRAINING_RUNS, "t", [_training_run("t1", 1), _training_run("t2", 2, "failed")])
    metric = {"run_id": "t1", "split_id": "s1", "n": 4}
    _write(wh, METRICS, "t1", [metric | {"model": "model", "task": "emotion", "metric": "accuracy", "value": 0.75},
                               metric | {"model": "majority", "task": "emotion", "metric": "accuracy", "value": 0.25},
                               metric | {"model": "logreg", "task": "emotion", "metric": "accuracy", "value": 0.5},
                               metric | {"model": "model", "task": "stress", "metric": "f1", "value": 0.6}])
    rows = _rows(wh, """SELECT run_id, status, emotion_accuracy, majority_accuracy, logreg_accuracy, stress_f1,
            valence_ccc, error FROM run_summary ORDER BY run_id""")
    assert rows == [("t1", "completed", 0.75, 0.25, 0.5, 0.6, None, None),
                    ("t2", "failed", None, None, None, None, None, "boom")]
