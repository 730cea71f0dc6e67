"""The item model on real runs: labels a run does not give stay, files with the same bytes are
linked instead of loaded twice, every sequence of edits converges to the warehouse a fresh build
of the same files gives, a file overwritten with garbage has one state, mixed folders route each
kind to its extractor."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flows.build_features import build_features
from warehouse import Warehouse
from warehouse.query import run_query

MODE_A = "fixtures/openface/mode_A"


def q(home: Path, sql: str) -> list[dict]:
    return run_query(Warehouse(home), sql).to_pylist()


@pytest.fixture()
def csvs(shared_dir: Path, tmp_path: Path) -> dict[str, str]:
    """Three distinct OpenFace CSV contents (72, 20 and 10 frames of one real clip)."""
    lines = (shared_dir / MODE_A / "single_face.csv").read_text().splitlines()
    return {"long": "\n".join(lines) + "\n", "mid": "\n".join(lines[:21]) + "\n", "short": "\n".join(lines[:11]) + "\n"}


def state(home: Path) -> dict:
    """Everything a user can see about files and items, by file name."""
    name = "regexp_extract({}, '[^/]+$')"
    return {
        "videos": q(home, f"select {name.format('path')} f, n_frames, partial from videos order by all"),
        "labels": q(home, f"select {name.format('v.path')} f, l.emotion, l.label_source from labels l "
                          "join videos v using (video_id) order by all"),
        "duplicates": q(home, f"select {name.format('path')} f, {name.format('same_as')} s, label_conflict is not null c "
                              "from duplicates order by all"),
        "frames": q(home, "select count(*) n, count(distinct video_id) v from frames"),
        "quarantine": q(home, f"select {name.format('path')} f, stage from quarantine order by all"),
    }


def test_a_run_without_labels_keeps_the_manifest_labels(af_home, prefect_api, csvs, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.csv").write_text(csvs["long"])
    (media / "b.csv").write_text(csvs["short"])
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,emotion\nmedia/a.csv,happy\nmedia/b.csv,sad\n")
    build_features(source=str(media), labels=str(manifest))
    labelled = state(af_home)["labels"]
    assert labelled == [{"f": "a.csv", "emotion": "happy", "label_source": "manifest"},
                        {"f": "b.csv", "emotion": "sad", "label_source": "manifest"}]
    again = build_features(source=str(media))  # no --labels: nothing a manifest said is lost
    assert again["skipped"] == 2 and state(af_home)["labels"] == labelled
    (media / "b.csv").write_text(csvs["mid"])  # a changed file keeps its manifest label too
    build_features(source=str(media))
    assert state(af_home)["labels"] == labelled
    one_row = tmp_path / "fix.csv"  # a new manifest row is how a label changes
    one_row.write_text("path,emotion\nmedia/a.csv,angry\n")
    build_features(source=str(media), labels=str(one_row))
    assert [r["emotion"] for r in state(af_home)["labels"]] == ["angry", "sad"]
    build_features(source=str(media), relabel=True)  # and `relabel` resets to what the files say
    assert [r["label_source"] for r in state(af_home)["labels"]] == ["none", "none"]


def _fresh(tmp_path: Path, media: Path, manifest: Path, monkeypatch, step: int) -> dict:
    home = tmp_path / f"fresh-{step}"
    monkeypatch.setenv("AFFECTFLOW_HOME", str(home))
    copy = tmp_path / f"copy-{step}" / "media"
    shutil.copytree(media, copy)  # same names and bytes, fresh warehouse
    fixed = copy.parent / "labels.csv"
    fixed.write_text(manifest.read_text())
    build_features(source=str(copy), labels=str(fixed))
    return state(home)


def test_duplicates_are_linked_and_every_sequence_of_edits_converges(af_home, prefect_api, csvs, tmp_path,
                                                                      monkeypatch):
    media = tmp_path / "work" / "media"
    media.mkdir(parents=True)
    manifest = media.parent / "labels.csv"
    manifest.write_text("path,emotion\nmedia/a.csv,happy\nmedia/b.csv,sad\nmedia/c.csv,neutral\n")
    steps = [  # (file -> content or None to delete); each step then a run, compared with a fresh build
        {"a.csv": "long", "b.csv": "long", "c.csv": "mid"},  # a and b: identical bytes, conflicting labels
        {"b.csv": "short"},  # the duplicate changes: it loads on its own, a stays whole
        {"a.csv": "short"},  # the canonical changes to the other's bytes: a becomes b's duplicate
        {"c.csv": "long", "b.csv": "mid"},  # a takes over b's old content; c brings the first back
        {"a.csv": "mid", "c.csv": "mid"},  # all three the same
    ]
    for step, edits in enumerate(steps):
        for name, content in edits.items():
            (media / name).write_text(csvs[content])
        monkeypatch.setenv("AFFECTFLOW_HOME", str(af_home))
        summary = build_features(source=str(media), labels=str(manifest))
        assert summary["loaded"] + summary["skipped"] + summary["duplicates"] == summary["items"] == 3, summary
        seen = state(af_home)
        assert seen == _fresh(tmp_path, media, manifest, monkeypatch, step), f"step {step}: {edits}"
        if step == 0:
            assert seen["videos"] == [{"f": "a.csv", "n_frames": 72, "partial": False},
                                      {"f": "c.csv", "n_frames": 20, "partial": False}]
            assert seen["labels"][0] == {"f": "a.csv", "emotion": "happy", "label_source": "manifest"}
            assert seen["duplicates"] == [{"f": "b.csv", "s": "a.csv", "c": True}]
            assert summary["duplicates"] == 1
        if step == 1:
            assert [v["n_frames"] for v in seen["videos"]] == [72, 10, 20] and seen["duplicates"] == []
    monkeypatch.setenv("AFFECTFLOW_HOME", str(af_home))
    assert q(af_home, "select count(*) n from videos") == [{"n": 1}]


def test_a_loaded_file_overwritten_with_garbage_has_one_state(af_home, prefect_api, csvs, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.csv").write_text(csvs["long"])
    (media / "b.csv").write_text(csvs["short"])
    build_features(source=str(media))
    (media / "a.csv").write_bytes(b"\x00\x01garbage\xff" * 100)
    summary = build_features(source=str(media))
    assert (summary["quarantined"], summary["skipped"]) == (1, 1)
    seen = state(af_home)
    assert seen["videos"] == [{"f": "b.csv", "n_frames": 10, "partial": False}]  # a's old rows are gone
    assert seen["quarantine"] == [{"f": "a.csv", "stage": "extract"}]
    assert seen["frames"] == [{"n": 10, "v": 1}]
    (media / "a.csv").write_text(csvs["long"])  # fixed: loaded again, quarantine entry gone
    build_features(source=str(media))
    assert state(af_home)["quarantine"] == [] and len(state(af_home)["videos"]) == 2


def test_a_mixed_folder_sends_each_kind_to_its_extractor(af_home, prefect_api, shared_dir, feat_data, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(shared_dir / MODE_A / "single_face.csv", media / "clip.csv")
    shutil.copy(feat_data / "single_face.jpg", media / "face.jpg")
    (media / "README.txt").write_text("notes about this folder\n")
    summary = build_features(source=str(media))
    assert summary["extractor"] == "mediapipe+openface-csv"
    assert (summary["items"], summary["loaded"]) == (2, 2)
    assert summary["ignored"] == 1 and summary["ignored_examples"][0].endswith("README.txt")
    assert q(af_home, "select extractor, count(*) n from videos group by 1 order by 1") == [
        {"extractor": "mediapipe", "n": 1}, {"extractor": "openface-csv", "n": 1}]
    only = build_features(source=str(media), extractor="mediapipe", force=True)
    assert only["items"] == 1 and only["ignored"] == 2  # the CSV is named as ignored, not dropped silently
    assert any(p.endswith("clip.csv") for p in only["ignored_examples"])
