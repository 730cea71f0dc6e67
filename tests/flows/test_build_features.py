"""build-features in process against a real Prefect server: idempotency, changed files,
bad input quarantined while good input loads, queries during a build."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from flows.build_features import build_features, summary_line
from warehouse import Warehouse
from warehouse.query import run_query

OPENFACE_FRAMES = 472 + 72 + 95 + 169 + 169


def q(home, sql):
    return run_query(Warehouse(home), sql).to_pylist()


def test_openface_import_twice_changes_nothing(af_home, prefect_api, shared_dir):
    source = str(shared_dir / "fixtures/openface/mode_A")
    first = build_features(source=source, extractor="openface-csv")
    rows_after_first = q(af_home, "select video_id, count(*) n, sum(success) s from frames group by 1 order by 1")
    second = build_features(source=source)
    assert (first["loaded"], second["loaded"], second["skipped"]) == (5, 0, 5)
    assert q(af_home, "select count(*) n from frames") == [{"n": OPENFACE_FRAMES}]
    assert q(af_home, "select video_id, count(*) n, sum(success) s from frames group by 1 order by 1") == rows_after_first
    assert q(af_home, "select count(*) n from runs") == [{"n": 2}]
    assert summary_line(second) == "5 files — 0 loaded, 5 already loaded, 0 quarantined; nothing new: 5 files unchanged"
    assert "None" not in summary_line(first) and "frames/s" in summary_line(first)


def test_changed_file_is_reextracted_and_old_rows_go(af_home, prefect_api, shared_dir, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    lines = (shared_dir / "fixtures/openface/mode_A/single_face.csv").read_text().splitlines()
    (media / "clip.csv").write_text("\n".join(lines) + "\n")
    build_features(source=str(media))
    (media / "clip.csv").write_text("\n".join(lines[:11]) + "\n")
    summary = build_features(source=str(media))
    assert summary["loaded"] == 1
    assert q(af_home, "select count(*) n, count(distinct source_id) s from frames") == [{"n": 10, "s": 1}]
    assert q(af_home, "select count(*) n from videos") == [{"n": 1}]


def _bad_corpus(folder, feat_data):
    folder.mkdir()
    shutil.copy(feat_data / "single_face.mp4", folder / "good.mp4")
    shutil.copy(feat_data / "no_face.mp4", folder / "empty_room.mp4")
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("this is not a video\n" * 100)
    data = (feat_data / "single_face.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 4])
    os.symlink(folder / "nowhere.mp4", folder / "dangling.mp4")


def test_bad_input_is_quarantined_and_good_input_loads(af_home, prefect_api, feat_data, tmp_path):
    folder = tmp_path / "mixed"
    _bad_corpus(folder, feat_data)
    summary = build_features(source=str(folder), extractor="mediapipe")
    assert (summary["items"], summary["loaded"], summary["quarantined"]) == (6, 2, 4)
    reasons = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in q(af_home, "select path, reason from quarantine")}
    assert reasons["zero.mp4"] == "empty file (0 bytes)"
    assert reasons["text.mp4"].startswith("cannot open video")
    assert "truncated" in reasons["truncated.mp4"] or "cannot open video" in reasons["truncated.mp4"]
    assert reasons["dangling.mp4"].startswith("cannot read file")
    no_face = q(af_home, "select count(*) n, sum(success) s, count(x_0) x from frames f join videos v using (video_id) "
                         "where v.path like '%empty_room.mp4'")
    assert no_face == [{"n": 95, "s": 0, "x": 0}]
    assert q(af_home, "select count(*) n, sum(success) s from frames f join videos v using (video_id) "
                      "where v.path like '%good.mp4'") == [{"n": 72, "s": 72}]
    # the user fixes one file; the next run loads it, clears its quarantine entry, keeps the rest
    shutil.copy(feat_data / "noface_face.mov", folder / "zero.mp4")
    again = build_features(source=str(folder), extractor="mediapipe")
    assert (again["loaded"], again["skipped"], again["quarantined"]) == (1, 2, 3)
    assert q(af_home, "select count(*) n from quarantine") == [{"n": 3}]
    assert q(af_home, "select count(*) n from frames") == [{"n": 72 + 95 + 169}]


def test_empty_folder_fails_with_its_reason_as_the_state_message(af_home, prefect_api, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("not media")
    state = build_features(source=str(folder), return_state=True)
    assert state.is_failed()
    assert state.message == f"no media found in folder {folder} (looked for .mp4 .avi .mov .mkv .webm .m4v " \
                            ".jpg .jpeg .png .bmp .csv); 1 other files there"


@pytest.mark.parametrize("manifest, message", [
    (None, "manifest {m} not found"),
    ("file,emo\nsingle_face.csv,happy\n", "manifest {m} has no 'path' column: its columns are 'file', 'emo'; "
                                            "expected 'path' and any of emotion, subject_id, valence, arousal, stress"),
], ids=["missing", "wrong-headers"])
def test_a_bad_labels_file_fails_the_run_in_one_line(af_home, prefect_api, shared_dir, tmp_path, manifest, message):
    labels = tmp_path / "labels.csv"
    if manifest:
        labels.write_text(manifest)
    state = build_features(source=str(shared_dir / "fixtures/openface/mode_A"), labels=str(labels), return_state=True)
    assert state.is_failed() and state.message == message.format(m=labels)  # not `[Errno 2] …`, not a traceback


def test_bad_parameters_are_rejected(af_home, prefect_api, shared_dir):
    with pytest.raises(Exception, match="fps"):
        build_features(source=str(shared_dir), fps=-1)


@pytest.mark.slow
def test_queries_never_fail_while_a_build_writes(af_home, prefect_api, shared_dir):
    env = dict(os.environ, PREFECT_API_URL=prefect_api["PREFECT_API_URL"])
    build = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "affectflow"), "build-features",
         str(shared_dir / "fixtures/openface/mode_A"), "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, queries = set(), 0
    while build.poll() is None:
        n = q(af_home, "select count(*) n from frames")[0]["n"]  # raises on any lock/IO error
        seen.add(n)
        queries += 1
        time.sleep(0.05)
    out = build.stdout.read()
    assert build.returncode == 0, out
    assert queries > 10 and len(seen) > 1  # the loop really ran during the writes
    assert seen <= {0, 472, 72, 95, 169} | {sum(c) for c in _partial_sums()}
    assert q(af_home, "select count(*) n from frames") == [{"n": OPENFACE_FRAMES}]


def _partial_sums():
    """Every total a reader may see: a whole item is visible or not, never part of one."""
    from itertools import combinations

    sizes = [472, 72, 95, 169, 169]
    return [c for r in range(len(sizes) + 1) for c in combinations(sizes, r)]


def test_manifest_labels_and_problems(af_home, prefect_api, shared_dir, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    for name in ("single_face.csv", "no_face.csv"):
        (media / name).write_text((shared_dir / "fixtures/openface/mode_A" / name).read_text())
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,emotion,subject_id,arousal\nmedia/single_face.csv,Anger,s7,2.5\n"
                        "media/no_face.csv,bored,,\nmedia/gone.csv,sad,,\n")
    summary = build_features(source=str(media), labels=str(manifest))
    assert (summary["loaded"], summary["quarantined"]) == (1, 2)  # a bad manifest row keeps its file out
    assert q(af_home, "select emotion, subject_id, stress, valence, arousal, label_source from labels "
                      "where emotion is not null") == [
        {"emotion": "angry", "subject_id": "s7", "stress": 1, "valence": 1.0, "arousal": 2.5, "label_source": "manifest"}]
    reasons = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in q(af_home, "select path, reason from quarantine")}
    assert reasons["gone.csv"] == "manifest labels.csv line 4: file not found"
    assert reasons["no_face.csv"].startswith("manifest labels.csv line 3: unknown emotion 'bored'")
