"""Labels from folders, file names, RAVDESS codes and manifests."""

import os
import re
import threading
import time
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


def test_manifest_paths_stay_inside_its_folder_or_the_source(tmp_path):
    data, source = tmp_path / "data", tmp_path / "source"
    (data / "sub").mkdir(parents=True)
    source.mkdir()
    for path in (data / "sub" / "a.mp4", source / "b.mp4", tmp_path / "outside.mp4"):
        path.write_bytes(b"x")
    manifest = data / "labels.csv"
    climb = "../" * 40 + "etc/hostname"
    manifest.write_text(f"path,emotion\n{climb},zzz\n/etc/os-release,x\n../outside.mp4,happy\n"
                        f"sub/../sub/a.mp4,happy\n{source / 'b.mp4'},sad\n")
    parsed = read_manifest(manifest, EMOTIONS, source)
    reasons = dict(parsed.problems)
    assert reasons[Path("/etc/hostname")] == (f"manifest labels.csv line 2: path {climb!r} is outside the "
                                             "manifest's folder and the source; refused")
    assert reasons[Path("/etc/os-release")].startswith("manifest labels.csv line 3: path '/etc/os-release' is outside")
    assert reasons[tmp_path / "outside.mp4"].startswith("manifest labels.csv line 4: path '../outside.mp4' is outside")
    assert set(parsed.rows) == {data / "sub" / "a.mp4", source / "b.mp4"}
    assert resolve_label(data / "sub" / "a.mp4", data, EMOTIONS, parsed).emotion == "happy"


@pytest.mark.parametrize(
    "values, reason",
    [("7,,", "valence 7 out of range (must be a number in [0, 3])"),
     (",-1,", "arousal -1 out of range (must be a number in [0, 3])"),
     (",,2", "stress 2 is not one of 0, 1"), (",,1.5", "stress 1.5 is not an integer"),
     ("nan,,", "valence 'nan' is not a number"), ("abc,,", "valence 'abc' is not a number")],
)
def test_label_values_are_checked_per_row_against_the_contract(tmp_path, values, reason):
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"x")
    manifest = tmp_path / "labels.csv"
    manifest.write_text(f"path,emotion,valence,arousal,stress\na.mp4,happy,,,1.0\nb.mp4,happy,{values}\n")
    parsed = read_manifest(manifest, EMOTIONS)
    assert parsed.rows[tmp_path / "a.mp4"].stress == 1  # "1.0" is a valid 1
    assert dict(parsed.problems) == {tmp_path / "b.mp4": f"manifest labels.csv line 3: {reason}"}
    assert tmp_path / "b.mp4" not in parsed.rows


def test_conflicting_duplicate_rows_are_reported_not_last_wins(tmp_path):
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"x")
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,emotion\na.mp4,happy\na.mp4,Happiness\nb.mp4,happy\nb.mp4,sad\n")
    parsed = read_manifest(manifest, EMOTIONS)
    assert parsed.rows[tmp_path / "a.mp4"].emotion == "happy"  # the same label twice is no conflict
    assert dict(parsed.problems) == {tmp_path / "b.mp4": "manifest labels.csv line 5: labels for 'b.mp4' "
                                     "conflict with line 4 (emotion 'happy' vs 'sad')"}
    assert tmp_path / "b.mp4" not in parsed.rows


def _feed_fifo(path, wait_s=5.0):
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # fails until someone opens it to read
        except OSError:
            time.sleep(0.05)
            continue
        os.write(fd, b"path,emotion\n")
        os.close(fd)
        return


@pytest.mark.parametrize("kind", ["folder", "binary", "nul", "fifo"])
def test_manifest_that_is_no_text_csv_is_named_in_one_line(tmp_path, kind):
    manifest = tmp_path / "labels.csv"
    if kind == "folder":
        manifest.mkdir()
    elif kind == "fifo":
        os.mkfifo(manifest)  # opening it waits for a writer: a reader that opens it must not hang the test
        threading.Thread(target=_feed_fifo, args=(manifest,), daemon=True).start()
    else:
        manifest.write_bytes(b"\x89PNG\r\n\x1a\n\0\0" if kind == "binary" else b"path,emotion\na.mp4\0,happy\n")
    with pytest.raises(ValueError, match=re.escape(f"manifest {manifest} ")) as raised:
        read_manifest(manifest, EMOTIONS)
    assert "\n" not in str(raised.value)
