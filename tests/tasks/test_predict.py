"""Prediction with a checkpoint trained here on MediaPipe features: the acceptance run on
WolfgangLanger_Pexels.mp4 through `affectflow predict`, the sliding windows against the shared
preprocessing, and every kind of bad input (one line on stderr, or the stated behaviour)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from affectflow.cli import main
from data_contracts import CONTRACT_VERSION
from tasks import predict as pr
from tasks.checkpoint import predict_windows
from tasks.features import make_windows
from tests.synthetic_predictions import RUN_ID, train_checkpoint
from tests.synthetic_training import COLUMNS
from warehouse import Warehouse
from warehouse.catalog import connect

WOLFGANG_FRAMES = 472  # OpenFace's frame count for this video (shared/fixtures/openface)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mediapipe_models_dir: Path):
    """A warehouse with a tiny trained checkpoint; AFFECTFLOW_HOME points at it for the module."""
    home = tmp_path_factory.mktemp("predict_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AFFECTFLOW_HOME", str(home))
        mp.setenv("AFFECTFLOW_MODELS_DIR", str(mediapipe_models_dir))
        mp.setenv("AFFECTFLOW_OFFLINE", "1")
        yield home, train_checkpoint(home)


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["predict", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(err: str, expected: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("affectflow: error:"), err
    assert expected in lines[0], lines[0]


def test_predict_video_gives_a_row_per_frame_plots_and_csv(trained, prefect_api, feat_data, tmp_path, capsys):
    home, _ = trained
    out = tmp_path / "out"
    code, stdout, err = _cli(capsys, str(feat_data / "WolfgangLanger_Pexels.mp4"), "--out", str(out))
    assert code == 0, err
    assert "WolfgangLanger_Pexels.mp4: 472/472 frames with a face" in stdout
    folder = out / "WolfgangLanger_Pexels"
    frames = pd.read_csv(folder / "frames.csv")
    assert len(frames) == frames["frame"].nunique() == WOLFGANG_FRAMES
    probs = frames[[c for c in frames if c.startswith("p_")]]
    assert list(probs.columns) == ["p_angry", "p_happy", "p_neutral", "p_sad"]
    faces = frames["face"] == 1
    assert faces.all() and np.allclose(probs[faces].sum(axis=1), 1.0, atol=1e-5)
    assert frames["stress_prob"].between(0, 1).all()
    assert {p.name for p in folder.glob("*.png")} == {"timeline.png", "distribution.png", "circumplex.png", "stress.png"}
    windows = pd.read_csv(folder / "windows.csv")
    assert len(windows) == -(-WOLFGANG_FRAMES // 4)  # the checkpoint's window is 4 frames
    assert (out / "summary.csv").exists()
    con = connect(Warehouse(home))
    rows = con.execute("""SELECT level, count(*), count(dominant_emotion),
            max(abs((SELECT sum(v::DOUBLE) FROM (SELECT unnest(json_extract(emotion_probs, '$.*')) AS v)) - 1))
        FROM predictions WHERE run_id = ? GROUP BY level ORDER BY level""", [RUN_ID]).fetchall()
    assert rows[0][:3] == ("frame", WOLFGANG_FRAMES, WOLFGANG_FRAMES) and rows[0][3] < 1e-5
    assert rows[1][:3] == ("window", len(windows), len(windows))
    summary = con.execute("SELECT frames, face_rate, predicted_by FROM video_summary "
                          "WHERE path LIKE '%WolfgangLanger_Pexels.mp4'").fetchall()
    assert summary == [(WOLFGANG_FRAMES, 1.0, RUN_ID)]


def test_video_without_a_face_exits_0_with_empty_predictions(trained, prefect_api, feat_data, tmp_path, capsys):
    home, _ = trained
    out = tmp_path / "out"
    code, stdout, err = _cli(capsys, str(feat_data / "no_face.mp4"), "--out", str(out))
    assert code == 0, err
    assert "no_face.mp4: no face found in any of 95 frames, so no predictions" in stdout
    frames = pd.read_csv(out / "no_face" / "frames.csv")
    assert len(frames) == 95 and (frames["face"] == 0).all() and frames["dominant_emotion"].isna().all()
    assert not list((out / "no_face").glob("*.png"))
    counts = connect(Warehouse(home)).execute("""SELECT count(*), count(emotion_probs) FROM predictions
        WHERE path LIKE '%no_face.mp4' AND level = 'frame'""").fetchone()
    assert counts == (95, 0)


def test_no_trained_model(tmp_path, monkeypatch, feat_data, capsys):
    monkeypatch.setenv("AFFECTFLOW_HOME", str(tmp_path / "empty"))
    code, _, err = _cli(capsys, str(feat_data / "single_face.mp4"))
    assert code == 2
    _one_line_error(err, "no trained model yet")


def test_missing_checkpoint(trained, feat_data, capsys):
    code, _, err = _cli(capsys, str(feat_data / "single_face.mp4"), "--run-id", "never-trained")
    assert code == 2
    _one_line_error(err, "checkpoint not found")


def test_corrupt_checkpoint(trained, feat_data, tmp_path, capsys):
    _, checkpoint = trained
    broken = tmp_path / "run" / "model.pt"
    broken.parent.mkdir()
    broken.write_bytes(checkpoint.read_bytes()[:5000])
    code, _, err = _cli(capsys, str(feat_data / "single_face.mp4"), "--checkpoint", str(broken))
    assert code == 2
    _one_line_error(err, "corrupt or not an affectflow checkpoint")


def _altered(checkpoint: Path, target: Path, change) -> Path:
    payload = torch.load(checkpoint, weights_only=True)
    change(payload)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, target)
    return target


def test_checkpoint_from_another_contract_version(trained, feat_data, tmp_path, capsys):
    _, checkpoint = trained
    old = _altered(checkpoint, tmp_path / "old" / "model.pt", lambda p: p.update(contract_version="0.9.0"))
    code, _, err = _cli(capsys, str(feat_data / "single_face.mp4"), "--checkpoint", str(old))
    assert code == 2
    _one_line_error(err, f"trained on data contract 0.9.0, but this affectflow reads contract {CONTRACT_VERSION}")


def test_checkpoint_with_unknown_feature_columns(trained, feat_data, tmp_path, capsys):
    _, checkpoint = trained

    def rename(payload: dict) -> None:
        payload["preprocessing"]["columns"][0] = "AU99_r"

    foreign = _altered(checkpoint, tmp_path / "foreign" / "model.pt", rename)
    code, _, err = _cli(capsys, str(feat_data / "single_face.mp4"), "--checkpoint", str(foreign))
    assert code == 2
    _one_line_error(err, f"feature columns are not in contract {CONTRACT_VERSION} (e.g. AU99_r)")


def test_unwritable_output_folder(trained, feat_data, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = _cli(capsys, str(feat_data / "single_face.mp4"), "--out", str(blocker / "out"))
    assert code == 2
    _one_line_error(err, f"cannot write to output folder {blocker / 'out'}")


def _synthetic_frames(n: int = 10, gap: tuple[int, ...] = (3, 4)) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frames = pd.DataFrame({"video_id": "v", "frame": np.arange(n), "face_id": 0,
                           "timestamp": np.arange(n) / 25, "success": [0 if i in gap else 1 for i in range(n)]})
    for column in COLUMNS:
        frames[column] = np.where(frames["success"] == 1, rng.normal(0.5, 0.2, n), np.nan)
    return frames


def test_sliding_windows_use_the_training_preprocessing(trained):
    _, checkpoint = trained
    model = pr.load_model(RUN_ID, checkpoint)
    frames = _synthetic_frames()
    rows = pr.predict_dataframe(model, frames)
    per_frame = rows[rows["level"] == "frame"].set_index("frame")
    assert per_frame.loc[[3, 4], "emotion_probs"].isna().all()  # no face: null, not a guess
    face = frames[frames["success"] == 1]
    raw = face[COLUMNS].to_numpy(np.float32)
    # frame 7 is the 6th face frame: its window is face frames 2..5 = frames 2, 5, 6, 7
    assert (per_frame.loc[7, "window_start"], per_frame.loc[7, "window_end"]) == (2, 7)
    direct = predict_windows(model.predictor.model, make_windows([raw[2:6]], model.predictor.prep))
    assert np.allclose(list(json.loads(per_frame.loc[7, "emotion_probs"]).values()), direct["emotion"][0])
    windows = rows[rows["level"] == "window"]
    assert list(zip(windows["window_start"], windows["window_end"], strict=True)) == [(0, 5), (6, 9)]  # face frames 0 1 2 5 | 6 7 8 9
    table = pr.to_contract(rows, RUN_ID, Path("/data/v.mp4"))
    assert table.num_rows == 12 and table.column("frame").null_count == 2


def test_sliding_window_bounds() -> None:
    raw = np.arange(6, dtype=np.float32).reshape(6, 1)
    windows = pr.sliding_windows(raw, 3)
    assert [w[:, 0].tolist() for w in windows] == [[0], [0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]


def test_predict_a_folder_of_images_in_batches_with_folder_plots(trained, prefect_api, tmp_path, capsys, monkeypatch):
    from flows import predict as flow
    from tests.face_images import write_face_images

    home, _ = trained
    folder = tmp_path / "faces"
    images = write_face_images(folder, 12)
    (folder / "broken.jpg").write_bytes(b"not an image" * 10)
    monkeypatch.setattr(flow, "IMAGE_BATCH", 5)  # 13 images: batches of 5, 5 and 3
    out = tmp_path / "out"
    code, stdout, err = _cli(capsys, str(folder), "--out", str(out))
    assert code == 1, err  # one image could not be read: the run says so, the others are predicted
    assert "broken.jpg: failed: cannot decode image" in stdout
    table = pd.read_csv(out / "faces" / "images.csv")
    assert len(table) == 12 and set(table["path"]) == {str(p) for p in images}
    assert table["face"].sum() >= 10 and table.loc[table["face"] == 1, "stress_prob"].between(0, 1).all()
    assert {p.name for p in (out / "faces").glob("*.png")} == {"distribution.png", "circumplex.png", "stress.png"}
    assert not list(out.glob("*/timeline.png"))  # one frame per image: no time courses
    files = sorted(p.name for p in (home / "parquet" / "predictions").glob(f"{RUN_ID}.images-*.parquet"))
    assert len(files) == 3  # one predictions file per batch, not one per image
    summary = pd.read_csv(out / "summary.csv")
    assert (summary["status"] == "failed").sum() == 1
    assert summary.loc[summary["status"] == "failed", "reason"].iloc[0].startswith("cannot decode image")
    again = _cli(capsys, str(folder), "--out", str(out))  # the same input: the same warehouse
    assert again[0] == 1 and sorted(p.name for p in (home / "parquet" / "predictions").glob(
        f"{RUN_ID}.images-*.parquet")) == files
