"""data_contracts/splits.py: every split rule passes a good split and fails its own bad fixture."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from data_contracts.splits import RULES, SplitCheck, Stages, check_split, expected_counts
from tasks.split import SplitSpec, split_grouped

SIZES = {"angry": 40, "sad": 30, "happy": 12, "fear": 3}  # fear is too small to stratify


def _good() -> tuple[pd.DataFrame, SplitCheck]:
    labels = [c for c, n in SIZES.items() for _ in range(n)] + [None] * 5
    units = pd.DataFrame({"unit_id": [f"v{i:03d}" for i in range(len(labels))], "label": labels})
    assignment = split_grouped(units, SplitSpec(seed=7))
    split = assignment.units.assign(video_id=assignment.units["unit_id"], emotion=assignment.units["label"],
                                    frame=None, face_id=None)
    ctx = SplitCheck(eligible=pd.Index(units["unit_id"]), min_class_units=assignment.min_class_units,
                     small_classes=assignment.small_classes, previous=split[["unit_id", "partition", "label"]])
    return split, ctx


def _first(split: pd.DataFrame, partition: str, label: str | None = "angry", n: int = 1) -> pd.Index:
    rows = split[(split["partition"] == partition) & (split["label"] == label)]
    return rows.index[:n]


def _twice(split, ctx):
    extra = split.loc[_first(split, "ssl")].assign(partition="classifier")
    return pd.concat([split, extra], ignore_index=True), ctx


def _missing(split, ctx):
    return split.drop(index=_first(split, "ssl")), ctx


def _off_balance(split, ctx):
    split = split.copy()
    split.loc[_first(split, "ssl", n=4), "partition"] = "finetune"
    return split, ctx


def _leak(split, ctx):
    split = split.copy()
    test_video = split.loc[_first(split, "test"), "video_id"].iloc[0]
    split.loc[_first(split, "ssl"), "video_id"] = test_video
    return split, ctx


def _holdout_moved(split, ctx):
    previous = ctx.previous.copy()
    previous.loc[_first(previous, "ssl"), "partition"] = "test"
    ctx.previous = previous
    return split, ctx


def _no_emotion(split, ctx):
    split = split.copy()
    split.loc[_first(split, "classifier"), "emotion"] = None
    return split, ctx


def _unreported(split, ctx):
    ctx.small_classes = {}
    return split, ctx


BREAK: dict[str, Callable] = {
    "disjoint": _twice,
    "complete": _missing,
    "class_balance": _off_balance,
    "group_pure": _leak,
    "holdout_unchanged": _holdout_moved,
    "labelled_have_emotion": _no_emotion,
    "small_classes_reported": _unreported,
}


def test_every_rule_has_a_failing_fixture() -> None:
    assert set(BREAK) == set(RULES)


@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_passes_a_good_split(name: str) -> None:
    split, ctx = _good()
    result = RULES[name](split, ctx)
    assert result.passed, result.message


@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_fails_its_bad_fixture_with_counts(name: str) -> None:
    split, ctx = BREAK[name](*_good())
    result = RULES[name](split, ctx)
    assert not result.passed
    assert result.name == name and result.counts and result.message


def test_check_split_names_the_failing_rule() -> None:
    contract = check_split(*_missing(*_good()))
    assert not contract.passed
    assert [r.name for r in contract.failed] == ["complete"]
    assert contract.summary().startswith("complete: 1 eligible units unassigned")
    assert '"passed": false' in contract.to_json()


def test_small_classes_live_in_pretrain() -> None:
    split, ctx = _good()
    assert ctx.small_classes == {"fear": 3}
    assert (split.loc[split["label"] == "fear", "partition"] == "pretrain").all()
    split.loc[split["label"] == "fear", "partition"] = "ssl"
    assert not RULES["class_balance"](split, ctx).passed


def test_stratified_targets_are_sklearn_shares() -> None:
    """Row strategy: a split's size is fixed first, each class gets its share of it."""
    counts = pd.DataFrame({"test": [0, 0], "pretrain": [140, 31], "ssl": [42, 10], "classifier": [12, 2],
                           "finetune": [6, 2]}, index=["angry", "happy"], dtype=float)
    target = expected_counts(counts, Stages(test=0.0), "stratified")
    assert target.loc["angry", "ssl"] == pytest.approx(52 * 60 / 74)
    assert target.loc["happy", "classifier"] == pytest.approx(14 * 4 / 22)
