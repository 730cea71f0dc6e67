"""Split versions: the `split_runs` and `splits` tables, and the rules a split must pass.

A split assigns every eligible unit (a video, a subject, or a frame row) to one partition.
Before a version is published, `check_split` runs every rule below; each rule is a named
function with one passing and one failing fixture in tests/data_contracts/test_split_rules.py.

The rules see the split at row level, one row per (unit_id, video_id[, frame, face_id]), with
columns `unit_id` (the assigned entity: a video, a subject, or a frame row), `video_id`,
`partition`, `emotion` (the row's label) and `label` (the entity's stratum: its emotion, or one
stratum for every subject with a labelled video).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from data_contracts.columns import Column, Table

if TYPE_CHECKING:  # pandas loads in the rules that use it: reading the warehouse needs the
    import pandas as pd  # tables declared here, not pandas (`affectflow query` starts faster)

PARTITIONS = ("test", "pretrain", "ssl", "classifier", "finetune")
LABELLED_PARTITIONS = ("test", "ssl", "classifier", "finetune")
UNLABELLED = "(unlabelled)"

SPLITS = Table(
    "splits",
    (
        Column("split_id", "string", nullable=False, description="the split version (split_runs.split_id)"),
        Column("unit_id", "string", nullable=False,
               description="the unit trained and scored: video_id (also when grouped by subject: the "
               "subject decides the side, the video or image stays the unit), or video_id/frame/face_id"),
        Column("video_id", "string", nullable=False),
        Column("frame", "int32", range=(0, None), description="row strategy only, else null"),
        Column("face_id", "int16", range=(0, None), description="row strategy only, else null"),
        Column("partition", "string", nullable=False, allowed=PARTITIONS),
        Column("emotion", "string", description="canonical emotion; null for unlabelled units"),
    ),
    key=("split_id", "video_id", "frame", "face_id"),
    description="One row per split version and video (grouped) or frame row (row strategy).",
)

SPLIT_RUNS = Table(
    "split_runs",
    (
        Column("split_id", "string", nullable=False),
        Column("created_at", "timestamp", nullable=False),
        Column("status", "string", nullable=False, allowed=("published", "rejected")),
        Column("strategy", "string", nullable=False, allowed=("grouped", "row")),
        Column("mode", "string", nullable=False, allowed=("stable", "reshuffle")),
        Column("group_by", "string", nullable=False, allowed=("video", "subject", "row")),
        Column("seed", "int64", nullable=False),
        Column("params", "string", nullable=False, description="JSON of the split parameters"),
        Column("fingerprint", "string", nullable=False, description="hash of the units the split saw"),
        Column("previous_split_id", "string", description="version it carried assignments from"),
        Column("contract_result", "string", nullable=False, description="JSON: each rule, passed, counts"),
        Column("message", "string", description="why a version was rejected"),
        Column("units", "int64", nullable=False),
        Column("rows", "int64", nullable=False),
        *(Column(f"{p}_rows", "int64", nullable=False) for p in PARTITIONS),
    ),
    key=("split_id",),
    description="One row per split version, published or rejected; the newest published is current.",
)


@dataclass(frozen=True)
class Stages:
    """The declared fractions. The test holdout is carved first, then `pretrain` of what is left;
    the rest (labelled) is split ssl / classifier / finetune."""

    test: float = 0.15
    pretrain: float = 0.7
    ssl: float = 0.7
    classifier: float = 0.2
    finetune: float = 0.1


@dataclass
class SplitCheck:
    """What the rules need besides the split itself."""

    eligible: pd.Index  # unit ids that must be assigned
    stages: Stages = field(default_factory=Stages)
    # `per_class`: target = fraction x the class's units entering the stage (grouped strategy).
    # `stratified`: target = the partition's size x the class's share of the stage's input, which is
    # what sklearn's stratified train_test_split aims at (row strategy, the research procedure).
    balance: str = "per_class"
    group_column: str = "video_id"
    # partition -> side; a group may not sit on two sides. Grouped: every partition is its own side.
    sides: Mapping[str, str] = field(default_factory=lambda: {p: p for p in PARTITIONS})
    min_class_units: int = 5
    small_classes: Mapping[str, int] = field(default_factory=dict)  # reported by the split
    # the test holdout is drawn in whole groups (row strategy: videos), so it is counted in groups
    test_by_group: bool = False
    previous: pd.DataFrame | None = None  # unit_id, partition, label of the version carried from


@dataclass(frozen=True)
class RuleResult:
    name: str
    passed: bool
    message: str
    counts: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ContractResult:
    rules: tuple[RuleResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rules)

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed]

    def summary(self) -> str:
        if self.passed:
            return f"all {len(self.rules)} split rules passed"
        return "; ".join(f"{r.name}: {r.message}" for r in self.failed)

    def to_json(self) -> str:
        return json.dumps({"passed": self.passed, "rules": [asdict(r) for r in self.rules]},
                          default=_plain, sort_keys=True)


def _plain(value: object) -> object:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _units(split: pd.DataFrame) -> pd.DataFrame:
    return split.drop_duplicates("unit_id")[["unit_id", "partition", "label"]]


def _examples(values: pd.Index | pd.Series, n: int = 3) -> list[str]:
    return [str(v) for v in list(values[:n])]


def disjoint(split: pd.DataFrame, ctx: SplitCheck) -> RuleResult:
    """Each unit sits in exactly one partition, and no row appears twice."""
    parts = split.groupby("unit_id", sort=False)["partition"].nunique()
    multi = parts.index[parts > 1]
    key = [c for c in ("unit_id", "video_id", "frame", "face_id") if c in split.columns]
    dup_rows = int(split.duplicated(key).sum())
    ok = len(multi) == 0 and dup_rows == 0
    msg = "every unit in one partition" if ok else (
        f"{len(multi)} units in more than one partition (e.g. {_examples(multi)}), "
        f"{dup_rows} duplicated rows")
    return RuleResult("disjoint", ok, msg, {"units_in_several": len(multi), "duplicated_rows": dup_rows})


def complete(split: pd.DataFrame, ctx: SplitCheck) -> RuleResult:
    """The assigned units are exactly the eligible units, each in a known partition."""
    import pandas as pd

    assigned = pd.Index(split["unit_id"].unique())
    missing = ctx.eligible.difference(assigned)
    extra = assigned.difference(ctx.eligible)
    unknown = sorted(set(split["partition"].unique()) - set(PARTITIONS))
    ok = len(missing) == 0 and len(extra) == 0 and not unknown
    msg = "every eligible unit assigned" if ok else (
        f"{len(missing)} eligible units unassigned (e.g. {_examples(missing)}), "
        f"{len(extra)} assigned units not eligible, unknown partitions {unknown}")
    return RuleResult("complete", ok, msg, {"eligible": len(ctx.eligible), "assigned": len(assigned),
                                            "missing": len(missing), "extra": len(extra)})


def _count_matrix(units: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    table = pd.crosstab(units["label"], units["partition"])
    return table.reindex(columns=list(PARTITIONS), fill_value=0).astype(float)


def expected_counts(counts: pd.DataFrame, stages: Stages, balance: str) -> pd.DataFrame:
    """Per class (rows) and partition (columns) the target unit count, stage by stage, from the
    counts actually entering each stage."""
    import pandas as pd

    n = counts.sum(axis=1)
    target = pd.DataFrame(index=counts.index, columns=list(PARTITIONS), dtype=float)
    target["test"] = n * stages.test
    entering = n - counts["test"]
    target["pretrain"] = entering * stages.pretrain
    labelled = entering - counts["pretrain"]
    if balance == "per_class":
        for p in ("ssl", "classifier", "finetune"):
            target[p] = labelled * getattr(stages, p)
        return target
    # sklearn fixes a split's size first, then gives each class its share of that size.
    target["ssl"] = counts["ssl"].sum() * labelled / max(labelled.sum(), 1)
    rest = labelled - counts["ssl"]
    share = rest / max(rest.sum(), 1)
    target["classifier"] = counts["classifier"].sum() * share
    target["finetune"] = counts["finetune"].sum() * share
    return target


def class_balance(split: pd.DataFrame, ctx: SplitCheck) -> RuleResult:
    """Per class and partition, the unit count is within one unit of its target. Unlabelled units
    and classes too small to stratify belong in pretrain entirely."""
    units = _units(split)
    lab = units["label"].notna() & ~units["label"].isin(list(ctx.small_classes))
    stray = units[~lab & (units["partition"] != "pretrain")]
    counts = _count_matrix(units[lab])
    diff = (counts - expected_counts(counts, ctx.stages, ctx.balance)).abs()
    if ctx.test_by_group:  # a group's rows share its label and, when in test, its partition
        first = split[split["label"].notna() & ~split["label"].isin(list(ctx.small_classes))]
        groups = first.drop_duplicates(ctx.group_column)
        n = groups.groupby("label").size().reindex(diff.index, fill_value=0)
        in_test = groups[groups["partition"] == "test"].groupby("label").size().reindex(diff.index, fill_value=0)
        diff["test"] = (in_test - n * ctx.stages.test).abs()
    bad = diff.stack()
    bad = bad[bad > 1 + 1e-9]
    ok = bad.empty and stray.empty
    msg = "every class within one unit of its targets" if ok else (
        f"{len(bad)} class/partition counts off target by more than one unit "
        f"({', '.join(f'{c}/{p} off by {d:.2f}' for (c, p), d in bad.head(4).items())}); "
        f"{len(stray)} unlabelled or too-small-class units outside pretrain")
    counts_out = {f"{c}/{p}": int(v) for (c, p), v in counts.stack().items()}
    return RuleResult("class_balance", ok, msg, {"off_target": len(bad), "stray": len(stray), **counts_out})


def group_pure(split: pd.DataFrame, ctx: SplitCheck) -> RuleResult:
    """No group (a video, or a subject) has rows on two sides of the split."""
    sides = split["partition"].map(dict(ctx.sides)).fillna(split["partition"])
    per_group = sides.groupby(split[ctx.group_column], sort=False).nunique()
    leaking = per_group.index[per_group > 1]
    ok = len(leaking) == 0
    where = "/".join(dict.fromkeys(ctx.sides.values()))
    msg = f"no {ctx.group_column} on two sides of {where}" if ok else (
        f"{len(leaking)} groups ({ctx.group_column}) in more than one partition (e.g. {_examples(leaking)})")
    return RuleResult("group_pure", ok, msg, {"groups": len(per_group), "leaking": len(leaking)})


def holdout_unchanged(split: pd.DataFrame, ctx: SplitCheck) -> RuleResult:
    """A unit stratified in the previous version and labelled now is in test iff it was then."""
    if ctx.previous is None or ctx.previous.empty:
        return RuleResult("holdout_unchanged", True, "no previous version", {"compared": 0})
    now = _units(split)
    now = now[now["label"].notna()]
    prev = ctx.previous.drop_duplicates("unit_id")
    sizes = prev["label"].value_counts()
    # units that sat in pretrain only because they were unlabelled or their class too small may move
    prev = prev[prev["label"].isin(list(sizes[sizes >= ctx.min_class_units].index))]
    both = now.merge(prev[["unit_id", "partition"]], on="unit_id", suffixes=("", "_prev"))
    was, is_ = both["partition_prev"] == "test", both["partition"] == "test"
    left, joined = int((was & ~is_).sum()), int((~was & is_).sum())
    ok = left == 0 and joined == 0
    msg = "test holdout unchanged" if ok else (
        f"{left} units left the test holdout and {joined} earlier units joined it")
    return RuleResult("holdout_unchanged", ok, msg, {"compared": len(both), "left_test": left, "joined_test": joined})


def labelled_have_emotion(split: pd.DataFrame, ctx: SplitCheck) -> RuleResult:
    """Every row in a labelled partition (test, ssl, classifier, finetune) has an emotion."""
    bad = split[split["partition"].isin(LABELLED_PARTITIONS) & split["emotion"].isna()]
    ok = bad.empty
    msg = "every labelled row has an emotion" if ok else (
        f"{len(bad)} rows in labelled partitions have no emotion "
        f"({bad['partition'].value_counts().to_dict()})")
    return RuleResult("labelled_have_emotion", ok, msg, {"missing_emotion": len(bad)})


def small_classes_reported(split: pd.DataFrame, ctx: SplitCheck) -> RuleResult:
    """Classes with fewer units than the strategy needs to stratify are named in the report
    (and still assigned, to pretrain), never dropped in silence."""
    eligible = _units(split)
    sizes = eligible["label"].value_counts()
    small = {str(c): int(n) for c, n in sizes[sizes < ctx.min_class_units].items()}
    unreported = sorted(set(small) - set(ctx.small_classes))
    ok = not unreported
    msg = (f"small classes reported: {small}" if small else "no class too small") if ok else (
        f"classes below {ctx.min_class_units} units not reported: "
        f"{ {c: small[c] for c in unreported} }")
    return RuleResult("small_classes_reported", ok, msg, {"min_class_units": ctx.min_class_units, **small})


Rule = Callable[["pd.DataFrame", SplitCheck], RuleResult]
RULES: dict[str, Rule] = {
    r.__name__: r
    for r in (disjoint, complete, class_balance, group_pure, holdout_unchanged, labelled_have_emotion,
              small_classes_reported)
}


def check_split(split: pd.DataFrame, ctx: SplitCheck) -> ContractResult:
    """Run every split rule; the result says which failed, with counts."""
    return ContractResult(tuple(rule(split, ctx) for rule in RULES.values()))
