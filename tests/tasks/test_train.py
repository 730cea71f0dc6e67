"""Training stages on a small synthetic warehouse with a planted signal: data preparation, the
two protocols and the units they train on, determinism for a seed, resume after a kill, bounded
outputs, one extractor per model, and the checkpoint round trip."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from data_contracts.splits import Stages
from models.multitask import EnsembleModel, MultiTaskModel
from models.weighting import build_weighting
from tasks import train as tr
from tasks.checkpoint import load_checkpoint, predict_frames, predict_units
from tasks.errors import SetupError
from tasks.evaluate import evaluate_run, model_scores
from tasks.publish_split import publish_split
from tasks.split import SplitSpec
from tasks.training_data import labelled_units, member_folds, tensor_set
from tests.synthetic_training import (
    COLUMNS,
    MEDIAPIPE_SOURCE,
    OPENFACE_COLUMNS,
    OPENFACE_SOURCE,
    build_warehouse,
)
from warehouse.catalog import connect

torch.set_num_threads(1)
# small and quick: 3 members, 6 epochs, one (weight decay, dropout) candidate unless a test asks
CFG = tr.TrainConfig(window=4, hidden=32, epochs=6, batch_size=16, patience=50, seed=3, ensemble=3,
                     select_regularisation=False, resume_every_s=0)
RESEARCH = replace(CFG, protocol="research")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory):
    return build_warehouse(tmp_path_factory.mktemp("train_wh"), videos_per_class=8, n_frames=8)


def _prepared(warehouse, run_dir: Path, cfg: tr.TrainConfig = CFG) -> dict:
    return tr.prepare_data(connect(warehouse), "s1", run_dir, cfg.window, cfg.protocol, cfg.extractor)


def test_prepare_uses_filled_columns_and_training_statistics(warehouse, tmp_path: Path) -> None:
    info = _prepared(warehouse, tmp_path)
    assert info["n_features"] == len(COLUMNS)  # the null contract columns are dropped, and said so
    assert info["dropped_columns"]["face_x"] == "null on every labelled training frame"
    assert info["emotions"] == ["angry", "happy", "neutral", "sad"]
    prepared = tr.load_prepared(tmp_path)
    assert prepared.prep.columns == COLUMNS and prepared.features["columns"] == COLUMNS
    # normalised with training statistics only: training windows centre on 0, the test ones need not
    train = np.concatenate([prepared.parts[p].windows.x[prepared.parts[p].windows.mask]
                            for p in ("pretrain", "ssl", "classifier", "finetune")])
    assert np.abs(train.mean(0)).max() < 1e-4
    assert len(prepared.parts["test"]) == 8 and (prepared.parts["test"].emotion >= 0).all()


def test_current_split_and_unknown_split(warehouse, tmp_path: Path) -> None:
    assert tr.prepare_data(connect(warehouse), "current", tmp_path, 4)["split_id"] == "s1"
    with pytest.raises(SetupError, match="not found"):
        tr.prepare_data(connect(warehouse), "nope", tmp_path / "x", 4)


def test_validation_slice_is_stratified_and_disjoint() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
    train, val = tr.validation_split(labels, 0.2, seed=1)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(labels)
    assert sorted(labels[val].tolist()) == [0, 0, 1]  # the 2-unit class stays in training


def test_member_folds_validate_every_unit_once_and_keep_tiny_classes_in_training() -> None:
    labels = np.array([0] * 11 + [1] * 3 + [2] * 2)
    folds = member_folds(labels, 5, 0.2, seed=4)
    validated = np.concatenate([val for _, val in folds])
    assert sorted(validated.tolist()) == list(range(14))  # classes 0 and 1: each unit validated once
    for train, val in folds:
        assert set(train).isdisjoint(val) and len(train) + len(val) == 16
        assert {14, 15} <= set(train)  # class 2 (two units) trains in every member
        assert (labels[train] == 1).sum() >= 2  # a class of 3 validates in 3 folds, trains in all
    assert max(len(v) for _, v in folds) - min(len(v) for _, v in folds) <= 1


def _train_all(warehouse, run_dir: Path, cfg: tr.TrainConfig = CFG, on_epoch=None) -> list[dict]:
    _prepared(warehouse, run_dir, cfg)
    stages = [tr.pretrain(run_dir, cfg), tr.supervised(run_dir, cfg, on_epoch)]
    tr.pseudo_label(run_dir, cfg)
    return [*stages, tr.finetune(run_dir, cfg)]


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("cfg", [replace(CFG, select_regularisation=True),
                                 replace(RESEARCH, encoder="transformer", loss_weighting="gradnorm")],
                         ids=["pooled", "research-transformer-gradnorm"])
def test_seeded_runs_are_identical(warehouse, tmp_path: Path, cfg: tr.TrainConfig) -> None:
    _train_all(warehouse, tmp_path / "a", cfg)
    _train_all(warehouse, tmp_path / "b", cfg)
    final = tr.stage_file(tmp_path / "a")
    assert final is not None and _same(_weights(final), _weights(tmp_path / "b" / final.name))


def test_pooled_protocol_trains_on_every_labelled_unit_and_the_baselines_on_the_same(warehouse,
                                                                                      tmp_path: Path) -> None:
    stages = _train_all(warehouse, tmp_path)
    prepared = tr.load_prepared(tmp_path)
    labelled = labelled_units(prepared)
    assert len(labelled) == 20  # ssl 4 + classifier 12 + finetune 4: every labelled training unit
    pretrain, supervised, finetune = stages
    assert pretrain["epochs_run"] > 0 and supervised["units"] == 20 and supervised["members"] == 3
    assert finetune["epochs_run"] == 0 and "pooled" in finetune["skipped"]
    assert tr.pseudo_label(tmp_path, CFG)["pseudo_labelled"] == 0
    results = evaluate_run(tmp_path, CFG)
    assert results["trained_on"] == {"protocol": "pooled", "partitions": ["ssl", "classifier", "finetune"],
                                     "units": 20}
    # the logistic-regression baseline is fitted on exactly those 20 units
    test = prepared.parts["test"]
    again = LogisticRegression(max_iter=2000, random_state=CFG.seed).fit(labelled.means, labelled.emotion)
    assert results["logreg"]["emotion"]["accuracy"] == np.mean(again.predict(test.means) == test.emotion)
    research = tmp_path / "research"
    _train_all(warehouse, research, RESEARCH)
    assert evaluate_run(research, RESEARCH)["trained_on"] == {
        "protocol": "research", "partitions": ["classifier", "finetune"], "units": 16}


def test_personalise_fine_tunes_each_member_on_the_finetune_partition(warehouse, tmp_path: Path) -> None:
    cfg = replace(CFG, personalise=True)
    _, supervised, finetune = _train_all(warehouse, tmp_path, cfg)
    assert supervised["units"] == 16  # the finetune partition is held out of the supervised stage
    assert finetune["members"] == 3 and finetune["units"] == 4 and finetune["epochs_run"] > 0
    assert tr.stage_file(tmp_path) == tmp_path / "finetune.pt"


def test_regularisation_is_chosen_on_the_validation_fold(warehouse, tmp_path: Path) -> None:
    _, supervised, _ = _train_all(warehouse, tmp_path, replace(CFG, select_regularisation=True))
    tried = supervised["regularisation_tried"]
    assert [(t["weight_decay"], t["dropout"]) for t in tried] == list(tr.REGULARISATION)
    best = min(tried, key=lambda t: t["val_loss"])
    assert (supervised["weight_decay"], supervised["dropout"]) == (best["weight_decay"], best["dropout"])
    model = tr.build_model(tmp_path, CFG, tr.load_prepared(tmp_path))
    assert isinstance(model, EnsembleModel) and model.config.dropout == best["dropout"]


class Killed(Exception):
    pass


def _kill_at(fit: str, epoch: int):
    def on_epoch(stage: str, e: int, epochs: int, record: dict) -> None:
        if record["fit"] == fit and e == epoch:
            raise Killed
    return on_epoch


def test_a_killed_run_resumes_from_its_last_epoch(warehouse, tmp_path: Path) -> None:
    cfg = replace(RESEARCH, encoder="transformer", loss_weighting="uncertainty")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    _prepared(warehouse, whole, cfg)
    tr.supervised(whole, cfg)
    _prepared(warehouse, broken, cfg)
    with pytest.raises(Killed):
        tr.supervised(broken, cfg, _kill_at("supervised", 3))
    assert (broken / "supervised_last.pt").exists() and not (broken / "supervised.pt").exists()
    seen = []
    summary = tr.supervised(broken, cfg, lambda s, e, n, r: seen.append(e))
    assert seen == [4, 5, 6] and summary["epochs_run"] == 6
    assert _same(_weights(whole / "supervised.pt"), _weights(broken / "supervised.pt"))


def test_a_killed_ensemble_resumes_inside_the_member_it_was_training(warehouse, tmp_path: Path) -> None:
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    _prepared(warehouse, whole)
    tr.supervised(whole, CFG)
    _prepared(warehouse, broken)
    with pytest.raises(Killed):
        tr.supervised(broken, CFG, _kill_at("supervised-m1", 4))
    assert (broken / "supervised-c0.pt").exists() and (broken / "supervised-m1_last.pt").exists()
    seen = []
    tr.supervised(broken, CFG, lambda s, e, n, r: seen.append((r["fit"], e)))
    assert seen[:2] == [("supervised-m1", 5), ("supervised-m1", 6)] and seen[2] == ("supervised-m2", 1)
    assert _same(_weights(whole / "supervised.pt"), _weights(broken / "supervised.pt"))


@pytest.mark.parametrize("cfg", [replace(CFG, epochs=25), replace(RESEARCH, epochs=25)], ids=["pooled", "research"])
def test_model_learns_the_planted_signal_and_checkpoint_round_trips(warehouse, tmp_path: Path,
                                                                     cfg: tr.TrainConfig) -> None:
    _train_all(warehouse, tmp_path, cfg)
    results = evaluate_run(tmp_path, cfg)
    assert results["model"]["emotion"]["accuracy"] >= 0.75  # chance is 0.25
    assert results["majority"]["emotion"]["accuracy"] <= 0.5
    path = tr.finish_run(tmp_path, cfg, results)

    predictor = load_checkpoint(path)
    assert predictor.meta["split_id"] == "s1" and predictor.meta["contract_version"]
    assert predictor.meta["extra"]["protocol"] == cfg.protocol
    assert predictor.meta["extra"]["features"]["columns"] == COLUMNS
    assert predictor.meta["metrics"]["model"]["emotion"]["accuracy"] == results["model"]["emotion"]["accuracy"]
    assert isinstance(predictor.model, EnsembleModel) == cfg.pooled
    prepared = tr.load_prepared(tmp_path)
    test = prepared.parts["test"]
    assert model_scores(predictor.model, prepared) == results["model"]
    frames = connect(warehouse).execute(
        "SELECT f.* FROM frames f JOIN splits s USING (video_id) WHERE s.partition = 'test'").df()
    table = predict_frames(predictor, frames)
    raw = [frames[frames.video_id == u].sort_values("frame")[predictor.prep.columns].to_numpy(np.float32)
           for u in table["video_id"]]
    direct = predict_units(predictor, raw)
    assert np.array_equal(table["emotion_confidence"].to_numpy(), direct["emotion"].max(1))
    truth = dict(zip(test.units, test.emotion, strict=True))
    hits = [prepared.emotions[truth[u]] == e for u, e in zip(table["video_id"], table["emotion"], strict=True)]
    assert np.mean(hits) == results["model"]["emotion"]["accuracy"]


def test_valence_and_arousal_stay_inside_the_label_range(warehouse, tmp_path: Path) -> None:
    _train_all(warehouse, tmp_path, replace(CFG, epochs=3))
    model = tr.build_model(tmp_path, CFG, tr.load_prepared(tmp_path)).eval()
    x = torch.cat([torch.full((4, 4, len(COLUMNS)), v) for v in (-1e4, -50.0, 0.0, 50.0, 1e4)])
    with torch.no_grad():
        va = model(x, torch.ones(x.shape[:2], dtype=torch.bool))["valence_arousal"]
    low, high = tr.VA_RANGE
    assert (low, high) == (0.0, 3.0) and bool((va >= low).all() and (va <= high).all())
    assert float(va.max() - va.min()) > 0.1  # bounded, not constant


def test_images_train_frame_by_frame(tmp_path: Path) -> None:
    wh = build_warehouse(tmp_path / "wh", videos_per_class=8, n_frames=1)
    info = tr.prepare_data(connect(wh), "s1", tmp_path / "run", window=16)
    prepared = tr.load_prepared(tmp_path / "run")
    assert info["window"] == 1 and prepared.prep.window == 1
    assert prepared.parts["test"].windows.x.shape == (8, 1, len(COLUMNS))  # one window per image, no padding


def test_a_subject_grouped_split_of_images_trains_and_scores_the_images(tmp_path: Path) -> None:
    # 12 people, each posing 2 images of every emotion: the subject picks the side, the image is the unit
    wh = build_warehouse(tmp_path / "wh", videos_per_class=24, n_frames=1, subjects=12, publish=False)
    outcome = publish_split(wh.home, SplitSpec(stages=Stages(test=0.25, pretrain=0.0), group_by="subject"))
    assert outcome.status == "published" and outcome.split_id is not None
    test_subjects = connect(wh).execute(
        "SELECT count(DISTINCT l.subject_id), count(*) FROM splits s JOIN labels l USING (video_id) "
        f"WHERE s.split_id = '{outcome.split_id}' AND s.partition = 'test'").fetchone()
    assert test_subjects == (3, 24)
    cfg = replace(CFG, window=1)
    tr.prepare_data(connect(wh), outcome.split_id, tmp_path / "run", cfg.window, cfg.protocol)
    tr.pretrain(tmp_path / "run", cfg)
    tr.supervised(tmp_path / "run", cfg)
    prepared = tr.load_prepared(tmp_path / "run")
    assert len(prepared.parts["test"]) == 24 and len(labelled_units(prepared)) == 72  # images, not 12 people
    assert sorted(set(prepared.parts["test"].emotion)) == [0, 1, 2, 3]
    results = evaluate_run(tmp_path / "run", cfg)
    assert results["model"]["emotion"]["n"] == 24 and results["model"]["emotion"]["accuracy"] > 0.5


def test_a_split_without_two_labelled_classes_or_with_an_unseen_test_class_is_refused(tmp_path: Path) -> None:
    wh = build_warehouse(tmp_path / "wh", videos_per_class=8, n_frames=2)
    con = connect(wh)
    from tasks.features import load_split
    from tasks.training_data import check_split_for

    split = load_split(con, "s1")
    for part in ("ssl", "classifier", "finetune"):
        split.partitions[part].emotion = ["sad" if e == "sad" else None for e in split.partitions[part].emotion]
    with pytest.raises(SetupError, match="1 emotion class .sad.; a classifier needs two or more"):
        check_split_for(split, "pooled")
    split = load_split(con, "s1")
    for part in ("ssl", "classifier", "finetune"):
        split.partitions[part].emotion = [None if e == "happy" else e for e in split.partitions[part].emotion]
    with pytest.raises(SetupError, match="test classes with no labelled training unit.*'happy': 2"):
        check_split_for(split, "pooled")
    split.partitions["classifier"].emotion = [None] * len(split.partitions["classifier"])
    with pytest.raises(SetupError, match="classifier partition, which the research protocol"):
        check_split_for(split, "research")


def test_a_warehouse_mixing_extractors_is_refused_or_trained_one_extractor_at_a_time(tmp_path: Path) -> None:
    wh = build_warehouse(tmp_path / "wh", videos_per_class=8, n_frames=4, sources=(MEDIAPIPE_SOURCE, OPENFACE_SOURCE))
    with pytest.raises(SetupError, match=r"mixes extractors: mediapipe \(32 units\), openface-csv \(32 units\).*"
                                         r"--extractor mediapipe"):
        tr.prepare_data(connect(wh), "s1", tmp_path / "mixed", 4)
    for extractor, columns in (("openface-csv", OPENFACE_COLUMNS), ("mediapipe", COLUMNS)):
        info = tr.prepare_data(connect(wh), "s1", tmp_path / extractor, 4, extractor=extractor)
        prepared = tr.load_prepared(tmp_path / extractor)
        assert prepared.prep.columns == columns and info["extractors"] == [extractor]
        assert info["excluded_units"] == {"openface-csv" if extractor == "mediapipe" else "mediapipe": 32}
        assert sum(info["units"].values()) == 32
        assert all(len(p.units) == len(set(p.units)) for p in prepared.parts.values())


def test_a_train_run_emits_no_runtime_warning(warehouse, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train_all(warehouse, tmp_path, replace(CFG, epochs=2))
        results = evaluate_run(tmp_path, CFG)
        tr.finish_run(tmp_path, CFG, results)
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []


def test_uncertainty_weights_move_within_a_short_run_at_their_own_learning_rate():
    """At the model's learning rate (1e-3) the log-variances barely move in the few steps a
    small data set gives (the weights stayed within 0.1% of fixed weighting on openface-labelled)."""
    from models.weighting import UncertaintyWeighting
    from tasks.train import TrainConfig, _optimizer

    model, weighting = torch.nn.Linear(2, 1), UncertaintyWeighting(2)
    optimizer = _optimizer(model, weighting, TrainConfig(), lr=1e-3)
    with torch.enable_grad():  # py-feat, imported by other tests, turns autograd off process-wide
        for _ in range(20):
            loss = weighting([torch.tensor(10.0), torch.tensor(0.1)])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    high, low = weighting.weights.tolist()
    assert high < 0.8 < 1.2 < low  # the noisy task is down-weighted, the precise one up


def test_normalisation_of_a_column_without_values_is_quiet_and_neutral() -> None:
    """A feature no training frame fills (others do) used to print numpy's `RuntimeWarning:
    invalid value encountered in divide` / `Mean of empty slice` in every train run's output."""
    import warnings

    from tasks.features import fit_preprocessing

    frames = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    frames[::3, 1] = np.nan
    frames[:, 2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prep = fit_preprocessing([frames[:15], frames[15:]], ["a", "b", "c"], 4)
    finite = frames[~np.isnan(frames[:, 1])]
    np.testing.assert_allclose(prep.mean[:2], [frames[:, 0].mean(), finite[:, 1].mean()], rtol=1e-5)
    np.testing.assert_allclose(prep.std[:2], [frames[:, 0].std(), finite[:, 1].std()], rtol=1e-5)
    assert (prep.mean[2], prep.std[2]) == (0.0, 1.0)


@pytest.mark.parametrize("protocol", ["pooled", "research"])
def test_pooled_training_smooths_the_emotion_loss_and_validation_does_not(warehouse, tmp_path: Path,
                                                                         protocol: str) -> None:
    _prepared(warehouse, tmp_path)
    prepared = tr.load_prepared(tmp_path)
    part = labelled_units(prepared)
    cfg = replace(CFG, protocol=protocol, class_weights=False, dropout=0.0)
    assert cfg.label_smoothing == 0.1  # the default
    step = tr._pooled_step(cfg, part, len(prepared.emotions)) if cfg.pooled else tr._supervised_step()
    model = MultiTaskModel(tr.model_config(cfg, prepared)).eval()
    batch = tensor_set(part).batch(torch.arange(len(part)), torch.device("cpu"))
    weighting = build_weighting("fixed", len(cfg.tasks))
    (emotion_train, *_), (emotion_val, *_) = (step(model, weighting, batch, training, None)[1]
                                              for training in (True, False))
    with torch.no_grad():
        logits, target = model(batch[0], batch[1])["emotion"], batch[2]["emotion"]
    plain = float(torch.nn.functional.cross_entropy(logits, target))
    smoothed = float(torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1))
    assert abs(smoothed - plain) > 1e-3  # the test can tell them apart
    assert emotion_val == pytest.approx(plain, abs=1e-5)  # early stopping compares plain losses
    # the research protocol reproduces the research pipeline: no smoothing there
    assert emotion_train == pytest.approx(smoothed if cfg.pooled else plain, abs=1e-5)
