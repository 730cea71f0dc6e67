"""Labels from folders, file names, RAVDESS codes and manifests."""

from pathlib import Path

import pytest

from data_contracts import load_emotion_map
from tasks.labels import read_manifest, resolve_label

EMOTIONS = load_emotion_map()


def test_folder_alias_wins_over_file_name(tmp_path):
    path = tmp_path / "Anger" / "sad.mp4"
    label = resolve_label(path, tmp_path, EMOTIONS, None)
    assert (label.emotion, label.source, label.stress, label.valence, label.arousal) == ("angry", "folder", 1, 1.0, 2.0)


def test_file_name_and_ravdess_codes(tmp_path):
    assert resolve_label(tmp_path / "happiness.csv", tmp_path, EMOTIONS, None).emotion == "happy"
    ravdess = resolve_label(Path("/x/02-01-06-01-02-01-05.mp4"), None, EMOTIONS, None)
    assert (ravdess.emotion, ravdess.subject_id, ravdess.source, ravdess.stress) == ("fear", "ravdess-05", "ravdess", None)
    assert resolve_label(tmp_path / "clip.mp4", tmp_path, EMOTIONS, None).source == "none"


def test_manifest_values_win_and_problems_are_reported(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.mp4").write_bytes(b"x")
    (tmp_path / "c.mp4").write_bytes(b"x")
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,emotion,subject_id,valence,stress\n"
                        "a.mp4,Sad,s1,0.5,\nb.mp4,bored,,,\nmissing.mp4,happy,,,\nc.mp4,,s2,,\n")
    parsed = read_manifest(manifest, EMOTIONS)
    a = resolve_label(tmp_path / "a.mp4", tmp_path, EMOTIONS, parsed)
    assert (a.emotion, a.subject_id, a.valence, a.arousal, a.stress, a.source) == ("sad", "s1", 0.5, 1.0, 1, "manifest")
    reasons = dict(parsed.problems)
    assert "unknown emotion 'bored'" in reasons[tmp_path / "b.mp4"]
    assert "file not found" in reasons[tmp_path / "missing.mp4"]
    assert resolve_label(tmp_path / "c.mp4", tmp_path, EMOTIONS, parsed).emotion is None


def test_manifest_without_path_column(tmp_path):
    manifest = tmp_path / "labels.csv"
    manifest.write_text("file,emotion\na.mp4,sad\n")
    with pytest.raises(ValueError, match="no 'path' column"):
        read_manifest(manifest, EMOTIONS)
