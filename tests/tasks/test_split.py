"""tasks/split.py: the research reproduction, and properties of both strategies on random labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_contracts.splits import PARTITIONS, Stages
from tasks.split import (
    SplitError,
    SplitSpec,
    apportion,
    fingerprint,
    min_class_units,
    split_grouped,
    split_rows,
    stage_targets,
    unit_labels,
)
from tests.research_split import research_split

RESEARCH_CLASSES = {"angry": 200, "sad": 200, "happy": 45, "neutral": 128}
ROW = SplitSpec(strategy="row", seed=42, stages=Stages(test=0.0))
CLASSES = ("angry", "sad", "happy", "neutral", "fear")
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _rows(sizes: dict[str, int]) -> pd.DataFrame:
    """Frame rows in source order: one OpenFace CSV per class, frames in order."""
    rows = [(f"{c}.csv/{i}/0", c) for c, n in sizes.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["unit_id", "label"])


def _research(rows: pd.DataFrame, seed: int = 42) -> dict[str, set[str]]:
    """The research code, as the issue states it, on a DataFrame of rows (in source order)."""
    return research_split(list(rows["unit_id"]), list(rows["label"]), seed)


def test_row_strategy_reproduces_the_research_table() -> None:
    rows = _rows(RESEARCH_CLASSES)
    units = split_rows(rows, ROW).units
    counts = pd.crosstab(units["partition"], units["label"])
    assert counts.loc["pretrain"].sum() == 400
    assert counts.loc["ssl"].to_dict() == {"angry": 42, "sad": 42, "neutral": 27, "happy": 10}
    assert counts.loc["classifier"].to_dict() == {"angry": 12, "sad": 12, "neutral": 8, "happy": 2}
    assert counts.loc["finetune"].to_dict() == {"angry": 6, "sad": 6, "neutral": 4, "happy": 2}
    assert [counts.loc[p].sum() for p in ("ssl", "classifier", "finetune")] == [121, 34, 18]
    # not just the counts: the very same rows as the research code
    research = _research(rows)
    for partition, members in research.items():
        assert set(units.loc[units["partition"] == partition, "unit_id"]) == members


@FAST
@given(sizes=st.lists(st.integers(44, 160), min_size=2, max_size=4), seed=st.integers(0, 2**31 - 1))
def test_row_strategy_equals_research_code_for_any_sizes(sizes: list[int], seed: int) -> None:
    rows = _rows(dict(zip(("angry", "sad", "happy", "neutral"), sizes, strict=False)))
    units = split_rows(rows, SplitSpec(strategy="row", seed=seed, stages=Stages(test=0.0))).units
    for partition, members in _research(rows, seed).items():
        assert set(units.loc[units["partition"] == partition, "unit_id"]) == members


@FAST
@given(sizes=st.lists(st.integers(1, 60), min_size=2, max_size=5))
def test_row_strategy_never_fails_inside_sklearn(sizes: list[int]) -> None:
    """Classes below the row minimum go to pretrain and are reported; the rest always split."""
    rows = _rows(dict(zip(CLASSES, sizes, strict=False)))
    minimum = min_class_units(ROW)
    big = [n for n in sizes if n >= minimum]
    if len(big) < 2:
        with pytest.raises(SplitError):
            split_rows(rows, ROW)
        return
    result = split_rows(rows, ROW)
    assert set(result.small_classes.values()) <= {n for n in sizes if n < minimum}
    small = result.units[result.units["label"].isin(list(result.small_classes))]
    assert (small["partition"] == "pretrain").all()


def _units(labels: list[str | None], prefix: str = "v") -> pd.DataFrame:
    return pd.DataFrame({"unit_id": [f"{prefix}{i:05d}" for i in range(len(labels))], "label": labels})


labels_strategy = st.lists(st.sampled_from([*CLASSES, None]), min_size=12, max_size=300).filter(
    lambda xs: len({x for x in xs if x is not None and xs.count(x) >= 5}) >= 2)


def _assert_within_one(units: pd.DataFrame, spec: SplitSpec, small: dict[str, int]) -> None:
    strat = units[units["label"].notna() & ~units["label"].isin(list(small))]
    counts = pd.crosstab(strat["label"], strat["partition"]).reindex(columns=list(PARTITIONS), fill_value=0)
    s = spec.stages
    n = counts.sum(axis=1)
    assert (abs(counts["test"] - n * s.test) <= 1).all()
    assert (abs(counts["pretrain"] - (n - counts["test"]) * s.pretrain) <= 1).all()
    labelled = n - counts["test"] - counts["pretrain"]
    for p in ("ssl", "classifier", "finetune"):
        assert (abs(counts[p] - labelled * getattr(s, p)) <= 1 + 1e-9).all()


@FAST
@given(labels=labels_strategy, seed=st.integers(0, 2**32 - 1))
def test_grouped_is_complete_disjoint_stratified(labels: list[str | None], seed: int) -> None:
    spec = SplitSpec(seed=seed)
    units = _units(labels)
    result = split_grouped(units, spec)
    out = result.units
    assert list(out["unit_id"]) == list(units["unit_id"])  # complete, one partition each
    assert out["partition"].isin(PARTITIONS).all()
    unstratified = out["label"].isna() | out["label"].isin(list(result.small_classes))
    assert (out.loc[unstratified, "partition"] == "pretrain").all()
    sizes = units["label"].value_counts()
    assert result.small_classes == {c: int(n) for c, n in sizes[sizes < 5].items()}
    _assert_within_one(out, spec, result.small_classes)


@FAST
@given(labels=labels_strategy, seed=st.integers(0, 2**32 - 1), data=st.data())
def test_grouped_is_deterministic_and_order_free(labels: list[str | None], seed: int, data) -> None:
    units = _units(labels)
    first = split_grouped(units, SplitSpec(seed=seed)).units.set_index("unit_id")["partition"]
    order = data.draw(st.permutations(range(len(units))))
    again = split_grouped(units.iloc[list(order)].reset_index(drop=True), SplitSpec(seed=seed)).units
    assert again.set_index("unit_id")["partition"].sort_index().equals(first.sort_index())


@FAST
@given(labels=labels_strategy, new=st.lists(st.sampled_from([*CLASSES, None]), max_size=120),
       seed=st.integers(0, 2**32 - 1))
def test_stable_mode_keeps_old_assignments(labels, new, seed) -> None:
    spec = SplitSpec(seed=seed)
    before = split_grouped(_units(labels), spec)
    old = before.units
    grown = pd.concat([_units(labels), _units(new, prefix="n")], ignore_index=True)
    result = split_grouped(grown, spec, previous=old, mode="stable")
    now = result.units.set_index("unit_id")["partition"]
    kept = old[old["label"].notna() & ~old["label"].isin([*before.small_classes, *result.small_classes])]
    assert (now[kept["unit_id"]].to_numpy() == kept["partition"].to_numpy()).all()
    _assert_within_one(result.units, spec, result.small_classes)


@FAST
@given(labels=labels_strategy, seed=st.integers(0, 2**32 - 2))
def test_reshuffle_keeps_the_test_holdout(labels, seed) -> None:
    units = _units(labels)
    old = split_grouped(units, SplitSpec(seed=seed)).units
    new = split_grouped(units, SplitSpec(seed=seed + 1), previous=old, mode="reshuffle").units
    assert set(new.loc[new["partition"] == "test", "unit_id"]) == set(old.loc[old["partition"] == "test", "unit_id"])


def test_grouped_subject_units_are_group_pure() -> None:
    rows = pd.DataFrame({"unit_id": [f"s{i % 30}" for i in range(300)],
                         "emotion": [CLASSES[i % 4] for i in range(300)]})
    labels = unit_labels(rows)
    units = pd.DataFrame({"unit_id": labels.index, "label": labels.to_numpy()})
    assigned = split_grouped(units, SplitSpec()).units.set_index("unit_id")["partition"]
    per_subject = rows.assign(partition=rows["unit_id"].map(assigned)).groupby("unit_id")["partition"].nunique()
    assert (per_subject == 1).all()


def test_unit_labels_take_the_most_frequent_emotion() -> None:
    rows = pd.DataFrame({"unit_id": ["a", "a", "a", "b", "b", "c"],
                         "emotion": ["sad", "happy", "sad", "happy", "angry", None]})
    labels = unit_labels(rows)
    assert labels["a"] == "sad" and labels["b"] == "angry" and pd.isna(labels["c"])


@pytest.mark.parametrize("labels, message", [
    ([None] * 20, "no labelled units"),
    (["angry"] * 20, "only 1 emotion class"),
    (["angry"] * 20 + ["sad"] * 3, "only 1 emotion class"),
])
def test_bad_label_sets_fail_with_a_message(labels, message) -> None:
    with pytest.raises(SplitError, match=message):
        split_grouped(_units(labels), SplitSpec())


def _video_rows(sizes: dict[str, int], frames: int) -> pd.DataFrame:
    """Frame rows of videos in source order: `frames` rows per video, one emotion per video."""
    rows = [(f"{c}{v:03d}/{f}/0", c, f"{c}{v:03d}") for c, n in sizes.items() for v in range(n) for f in range(frames)]
    return pd.DataFrame(rows, columns=["unit_id", "label", "video_id"])


def test_row_strategy_holds_out_whole_videos_then_runs_the_research_code_on_the_rest() -> None:
    rows = _video_rows({"angry": 20, "sad": 20, "happy": 12, "neutral": 14}, frames=5)
    spec = SplitSpec(strategy="row", seed=7, stages=Stages(test=0.15))
    units = split_rows(rows, spec).units
    test = units["partition"] == "test"
    per_video = rows.assign(test=test.to_numpy()).groupby("video_id")["test"].nunique()
    assert (per_video == 1).all()  # no video on both sides
    videos = rows.assign(test=test.to_numpy()).drop_duplicates("video_id")
    assert videos[videos["test"]].groupby("label").size().to_dict() == {"angry": 3, "sad": 3, "happy": 2, "neutral": 2}
    # the non-test rows are exactly the research code's split of those rows (in source order)
    rest = rows[~test.to_numpy()].reset_index(drop=True)
    for partition, members in _research(rest, seed=7).items():
        assert set(units.loc[units["partition"] == partition, "unit_id"]) == members


def test_row_strategy_with_test_fraction_zero_is_the_research_split() -> None:
    rows = _rows({**RESEARCH_CLASSES, "happy": 60})
    units = split_rows(rows, SplitSpec(strategy="row", seed=42, stages=Stages(test=0.15))).units
    assert units[units["partition"] == "test"]["label"].value_counts().to_dict() == {
        "angry": 30, "sad": 30, "neutral": 19, "happy": 9}  # 15% of each class
    zero = split_rows(rows, ROW).units
    assert "test" not in set(zero["partition"])


def test_a_class_too_small_for_the_research_code_after_the_holdout_goes_to_pretrain_reported() -> None:
    # 45 happy rows: 38 after a 15% holdout, fewer than the 44 the two stratified splits need
    result = split_rows(_rows(RESEARCH_CLASSES), SplitSpec(strategy="row", seed=42, stages=Stages(test=0.15)))
    assert result.small_classes == {"happy": 45}
    happy = result.units[result.units["label"] == "happy"]
    assert (happy["partition"] == "pretrain").all()


@given(totals=st.lists(st.integers(0, 10_000), min_size=1, max_size=8),
       weights=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=5))
def test_apportion_sums_and_stays_within_one(totals, weights) -> None:
    parts = apportion(np.array(totals), np.array(weights))
    assert (parts.sum(axis=1) == totals).all()
    exact = np.array(totals)[:, None] * np.array(weights) / sum(weights)
    assert (np.abs(parts - exact) < 1 + 1e-9).all()


def test_stage_targets_follow_the_declared_fractions() -> None:
    targets = stage_targets(np.array([200, 10]), Stages())
    assert targets.sum(axis=1).tolist() == [200, 10]
    assert targets[0].tolist() == [30, 119, 36, 10, 5]


def test_fingerprint_ignores_row_order_and_sees_labels() -> None:
    frame = _units(["angry", "sad", None, "happy"])
    assert fingerprint(frame) == fingerprint(frame.iloc[::-1])
    changed = frame.assign(label=["angry", "sad", "sad", "happy"])
    assert fingerprint(frame) != fingerprint(changed)


# RAVDESS actor 05 (../shared/data/ravdess-actor05): 14 clips, labels from the file names.
FOURTEEN_CLIPS = ["fear"] * 6 + ["sad"] * 5 + ["neutral", "happy", "surprise"]
SMALL_DATA = Stages(test=0.3, pretrain=0.0, ssl=0.25, classifier=0.5, finetune=0.25)


def _partition_counts(units: pd.DataFrame) -> pd.DataFrame:
    return pd.crosstab(units["label"], units["partition"]).reindex(columns=list(PARTITIONS), fill_value=0)


def test_default_fractions_leave_fourteen_clips_nothing_to_train_on() -> None:
    counts = _partition_counts(split_grouped(_units(FOURTEEN_CLIPS), SplitSpec()).units)
    assert counts[["classifier", "finetune"]].sum().sum() == 0


def test_no_pretrain_share_gives_every_stage_both_classes_of_fourteen_clips() -> None:
    spec = SplitSpec(stages=SMALL_DATA)
    assert min_class_units(spec) == 4  # an empty partition asks nothing of a class
    result = split_grouped(_units(FOURTEEN_CLIPS), spec)
    assert result.small_classes == {"neutral": 1, "happy": 1, "surprise": 1}
    counts = _partition_counts(result.units)
    assert counts.loc[["fear", "sad"], "pretrain"].tolist() == [0, 0]
    assert counts.loc[["neutral", "happy", "surprise"], "pretrain"].tolist() == [1, 1, 1]
    assert (counts.loc[["fear", "sad"], ["test", "ssl", "classifier", "finetune"]] >= 1).all().all()
    assert counts.loc[["fear", "sad"], "test"].tolist() == [2, 2]
    _assert_within_one(result.units, spec, result.small_classes)


def test_resplit_params_accept_no_pretrain_share() -> None:
    # The flow's form (ResplitParams, tests/flows/test_resplit.py) is how users reach this split.
    from pydantic import ValidationError

    from flows.resplit import ResplitParams

    params = ResplitParams(test_fraction=0.3, pretrain_fraction=0.0, ssl_fraction=0.25,
                           classifier_fraction=0.5, finetune_fraction=0.25)
    assert params.spec().stages == SMALL_DATA
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        ResplitParams(pretrain_fraction=-0.1)
