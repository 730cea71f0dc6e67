"""The AU estimate: its inputs, its shipped mapping, and its agreement with real OpenFace output.

The slow tests extract the 16 fitting videos with the real MediaPipe model (../shared) and check
that the shipped mapping (tasks/extractors/au_estimate.json) still scores what it records, that
re-running the fitting procedure gives the same held-out figures, and that a broken mapping
(inputs shuffled, AUs swapped) scores far worse.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_contracts import CONTRACT_VERSION, FRAMES
from data_contracts.tables import EST_AUS, est_au_columns
from tasks import au_agreement as fitting
from tasks.extractors.au_estimate import (
    BLENDSHAPE_INPUTS,
    GEOMETRY,
    INPUTS,
    MAPPING_FILE,
    from_mapping,
    geometry,
    load_au_estimate,
)
from tasks.extractors.base import ExtractOptions
from tasks.extractors.mediapipe import MediaPipeExtractor

R_TOLERANCE = 0.02  # MediaPipe's float output may differ in the last bits between machines
MAPPING = json.loads(MAPPING_FILE.read_text())


def _face(shared_dir: Path) -> np.ndarray:
    """A real frontal 68-point face (the first frame of OpenFace's single_face.csv)."""
    header, first = (shared_dir / "fixtures/openface/mode_A/single_face.csv").read_text().splitlines()[:2]
    row = dict(zip([h.strip() for h in header.split(",")], map(float, first.split(",")), strict=True))
    return np.array([[row[f"x_{i}"], row[f"y_{i}"]] for i in range(68)])


def test_geometry_ignores_where_the_face_is_its_size_and_roll(shared_dir):
    face = _face(shared_dir)
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (face - face.mean(axis=0)) @ rotation.T * 1.7 + np.array([400.0, -30.0])
    assert np.allclose(geometry(moved[None]), geometry(face[None]), atol=1e-9)


def test_geometry_follows_the_face(shared_dir):
    face = _face(shared_dir)
    names = [name for name, *_ in GEOMETRY]
    raised = face.copy()
    raised[17:27, 1] -= 8.0  # brows up (y down in the image)
    opened = face.copy()
    opened[[56, 57, 58, 65, 66, 67], 1] += 10.0  # lower lip down
    base, up, open_ = geometry(np.stack([face, raised, opened]))
    assert up[names.index("brow_inner")] > base[names.index("brow_inner")] + 0.05
    assert up[names.index("brow_outer")] > base[names.index("brow_outer")] + 0.05
    assert open_[names.index("mouth_open")] > base[names.index("mouth_open")] + 0.05
    assert np.isnan(geometry(np.zeros((1, 68, 2)))).all()  # no eye line: unknown, not zero


def test_shipped_mapping_matches_the_code_and_the_contract():
    estimate = load_au_estimate()
    assert MAPPING["inputs"] == list(INPUTS) and len(INPUTS) == len(BLENDSHAPE_INPUTS) + len(GEOMETRY)
    # fitted for the est_AU* columns of contract 1.1.0; later versions changed other tables only
    fitted, current = (tuple(map(int, v.split("."))) for v in (MAPPING["contract_version"], CONTRACT_VERSION))
    assert fitted[0] == current[0] and (1, 1, 0) <= fitted <= current
    assert {c for au in MAPPING["kept"] for c in est_au_columns(au)} <= set(FRAMES.names)
    assert tuple(MAPPING["kept"]) == estimate.aus == EST_AUS  # a refit that changes them changes the contract
    assert estimate.weights.shape == (len(INPUTS), len(EST_AUS)) and np.isfinite(estimate.weights).all()


def test_recorded_figures_follow_the_stated_rule():
    bound = MAPPING["bound"]["min_r"]
    for au in MAPPING["aus"]:
        rs = [au["held_out"][scheme]["r"] for scheme in ("video", "person")]
        assert au["kept"] == all(r is not None and r >= bound for r in rs), au["au"]
    by_au = {au["au"]: au for au in MAPPING["aus"]}
    assert by_au[12]["held_out"]["video"]["r"] >= 0.8 and by_au[6]["held_out"]["video"]["r"] >= 0.8
    assert MAPPING["summary_kept"]["video"]["r"] >= 0.6


def test_provenance_names_the_files_it_was_fitted_on(shared_dir, feat_data):
    videos, excluded = fitting.fitting_videos(shared_dir, feat_data)
    recorded = {v["name"]: v for v in MAPPING["provenance"]["videos"]}
    assert sorted(recorded) == sorted(v.name for v in videos) and len(videos) == 16
    for v in videos:
        assert recorded[v.name]["video_sha256"] == fitting.sha256(v.video)
        assert recorded[v.name]["openface_csv_sha256"] == fitting.sha256(v.openface_csv)
        frames = sum(last - first + 1 for first, last in recorded[v.name]["frames"])
        assert frames == recorded[v.name]["frames_paired"] > 0
    assert {e["video"] for e in excluded} == {"face_noface.mov", "noface_face.mov", "no_face.mp4"}


def test_a_face_gets_estimates_only_for_kept_aus(shared_dir):
    estimate = load_au_estimate()
    columns = estimate.face_columns(_face(shared_dir), dict.fromkeys(BLENDSHAPE_INPUTS, 0.1))
    assert set(columns) == {c for a in EST_AUS for c in est_au_columns(a)}
    for a in EST_AUS:
        r_name, c_name = est_au_columns(a)
        assert 0.0 <= columns[r_name] <= 5.0 and columns[c_name] in (0.0, 1.0)
    missing = estimate.face_columns(_face(shared_dir), {})  # no blendshapes: unknown, not zero
    assert all(np.isnan(v) for v in missing.values())


def test_presence_is_the_intensity_past_its_threshold():
    estimate = load_au_estimate()
    inputs = np.random.default_rng(0).uniform(0, 1, size=(200, len(INPUTS)))
    intensity, presence = estimate.predict(inputs)
    assert ((intensity >= estimate.thresholds) == (presence == 1)).all()


def test_a_mapping_for_other_inputs_is_refused():
    broken = {**MAPPING, "inputs": list(reversed(MAPPING["inputs"]))}
    with pytest.raises(ValueError, match="other inputs"):
        from_mapping(broken)


def test_the_estimate_is_in_the_extractor_config(mediapipe_models_dir):
    on = MediaPipeExtractor(models_dir=mediapipe_models_dir, offline=True)
    off = MediaPipeExtractor(models_dir=mediapipe_models_dir, offline=True, estimate_aus=False)
    assert on.config()["au_estimate"].startswith(MAPPING["version"] + "+") and off.config()["au_estimate"] is None
    assert on.config_hash(ExtractOptions()) != off.config_hash(ExtractOptions())


# --- against real OpenFace output, on the fitting videos ------------------------------------------


@pytest.fixture(scope="module")
def pairs(shared_dir, feat_data, mediapipe_models_dir):
    videos, _ = fitting.fitting_videos(shared_dir, feat_data)
    return fitting.extract_pairs(videos, MediaPipeExtractor(models_dir=mediapipe_models_dir, offline=True))


@pytest.mark.slow
def test_frames_pair_on_the_same_instants(pairs):
    """MediaPipe's 0-based decoder frame k is OpenFace's frame k+1: their timestamps agree."""
    assert len(pairs) == MAPPING["provenance"]["frames_paired"]
    assert np.abs(pairs["timestamp"] - pairs["timestamp_of"]).max() < 1e-3


@pytest.mark.slow
def test_the_extractors_estimates_score_what_the_mapping_records(pairs):
    """The est_ columns the real extractor writes, against OpenFace on the same frames."""
    for au in MAPPING["aus"]:
        r_name, c_name = est_au_columns(au["au"])
        if not au["kept"]:
            assert pairs[r_name].isna().all() and pairs[c_name].isna().all()
            continue
        got = fitting.agreement_of(pairs[r_name].to_numpy(float), pairs[c_name].to_numpy(float),
                                   pairs[f"AU{au['au']:02d}_r"].to_numpy(float), pairs[f"AU{au['au']:02d}_c"].to_numpy(float))
        assert got["r"] == pytest.approx(au["in_sample"]["r"], abs=R_TOLERANCE), au["au"]
        assert got["mae"] == pytest.approx(au["in_sample"]["mae"], abs=R_TOLERANCE), au["au"]
        assert got["f1"] == pytest.approx(au["in_sample"]["f1"], abs=0.03), au["au"]


@pytest.mark.slow
def test_refitting_reproduces_the_held_out_figures(pairs):
    """The fitting procedure, re-run on freshly extracted frames, gives the recorded held-out
    figures and keeps the same AUs."""
    figures = fitting.evaluate(pairs)
    assert fitting.kept(figures) == MAPPING["kept"]
    for scheme in ("video", "person"):
        for got, recorded in zip(figures[scheme], MAPPING["aus"], strict=True):
            want = recorded["held_out"][scheme]
            for key in ("r", "mae"):
                if want[key] is not None:
                    assert got[key] == pytest.approx(want[key], abs=R_TOLERANCE), (scheme, got["au"], key)


@pytest.mark.slow
def test_a_shuffled_or_swapped_mapping_scores_far_worse(pairs):
    estimate = load_au_estimate()
    x, y, _ = fitting.targets(pairs)
    truth = y[:, [fitting.AUS.index(a) for a in estimate.aus]]

    def mean_r(weights, intercept):
        pred = np.clip(x @ weights + intercept, 0, 5)
        return np.nanmean([fitting.pearson(pred[:, k], truth[:, k]) for k in range(truth.shape[1])])

    right = mean_r(estimate.weights, estimate.intercept)
    shuffled = mean_r(estimate.weights[np.random.default_rng(0).permutation(len(INPUTS))], estimate.intercept)
    roll = np.roll(np.arange(len(estimate.aus)), 1)
    swapped = mean_r(estimate.weights[:, roll], estimate.intercept[roll])
    assert right >= 0.75 and shuffled < right - 0.4 and swapped < right - 0.4
