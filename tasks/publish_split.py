"""Read the units from the warehouse, split them, check the split contract, write the version.

A version is two files: `splits/<split_id>.parquet` (the assignment) and then, last,
`split_runs/<split_id>.parquet` (its record). `current_split` only follows published records, so
a version whose record is not written yet (a crash, a failed contract) is never current. The whole
read-split-write runs under an exclusive file lock, so two runs at once serialise; the second sees
the first's version and, on the same data and parameters, writes nothing.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from data_contracts.splits import (
    PARTITIONS,
    SPLIT_RUNS,
    SPLITS,
    UNLABELLED,
    ContractResult,
    SplitCheck,
    check_split,
)
from tasks.errors import TransientError
from tasks.faults import failpoint
from tasks.split import Assignment, SplitError, SplitSpec, fingerprint, split_units, unit_labels
from warehouse.catalog import connect, refresh_catalog
from warehouse.layout import Warehouse
from warehouse.writer import rows_to_table, write_atomic

DEFAULT_SEED = 42
LOCK_TIMEOUT_S = 600.0
SUMMARY_SQL = (
    "SELECT partition, emotion, rows, units FROM split_summary WHERE split_id = $split_id "
    "ORDER BY partition, emotion"
)
_LABELS_SQL = ("SELECT video_id, min(emotion) AS emotion, min(subject_id) AS subject_id "
               "FROM labels GROUP BY video_id")
_GROUPED_SQL = f"""
SELECT v.video_id, l.emotion, l.subject_id
FROM (SELECT video_id FROM videos GROUP BY video_id HAVING max(n_face_frames) > 0) v
LEFT JOIN ({_LABELS_SQL}) l USING (video_id)
ORDER BY v.video_id"""
# Source order of the research code: source file, then frame (then face). Every imported row,
# with or without a face: the research code shuffles the rows of its CSVs as they are.
_ROWS_SQL = f"""
SELECT DISTINCT f.video_id || '/' || f.frame || '/' || f.face_id AS unit_id,
       f.video_id, f.frame, f.face_id, v.path, l.emotion
FROM frames f
JOIN (SELECT video_id, min(path) AS path FROM videos GROUP BY video_id) v USING (video_id)
LEFT JOIN ({_LABELS_SQL}) l USING (video_id)
ORDER BY v.path, f.frame, f.face_id, f.video_id"""


class SplitRejected(Exception):
    """The split failed its contract; the previous version stays current."""


@dataclass
class SplitOutcome:
    status: str  # published | rejected | unchanged | dry-run
    split_id: str | None
    fingerprint: str
    seed: int
    spec: SplitSpec
    counts: pd.DataFrame  # partition x emotion row counts
    contract: ContractResult | None = None
    message: str = ""
    sql: str = ""

    def as_dict(self) -> dict:
        return {"status": self.status, "split_id": self.split_id, "fingerprint": self.fingerprint,
                "seed": self.seed, "message": self.message,
                "contract_passed": None if self.contract is None else self.contract.passed}


@contextmanager
def resplit_lock(home: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[Path]:
    """Hold `<home>/locks/resplit.lock` exclusively (released by the OS if the process dies)."""
    path = Path(home) / "locks" / "resplit.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TransientError(f"another resplit has held {path} for over {timeout_s:g} s") from None
                time.sleep(0.2)
        try:
            yield path
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


SUBJECT_STRATUM = "(any emotion)"  # subjects are apportioned as one stratum (see tasks/split.py)


def _strata(labelled: np.ndarray) -> np.ndarray:
    """A subject's stratum: one for every subject with a labelled video, null for the others."""
    return np.array([SUBJECT_STRATUM if known else None for known in labelled], dtype=object)


def load_rows(con: duckdb.DuckDBPyConnection, spec: SplitSpec) -> pd.DataFrame:
    """The split's rows in source order: unit_id (what is trained and scored: a video/image, or a
    frame row), group_id (what is assigned: the unit, or its subject), video_id, frame, face_id,
    emotion[, path]."""
    if spec.strategy == "row":
        rows = con.execute(_ROWS_SQL).df()
        return rows.assign(group_id=rows["unit_id"])
    rows = con.execute(_GROUPED_SQL).df()
    if spec.group_by == "subject":
        missing = rows["subject_id"].isna()
        if missing.any():
            raise SplitError(f"group_by=subject, but {int(missing.sum())} of {len(rows)} videos have no "
                             f"subject_id (e.g. {rows.loc[missing, 'video_id'].iloc[0]}); label them or "
                             "group by video")
        rows["group_id"] = rows["subject_id"]
    else:
        rows["group_id"] = rows["video_id"]
    rows["unit_id"] = rows["video_id"]
    rows["frame"], rows["face_id"] = None, None
    return rows.drop(columns=["subject_id"])


def units_of(rows: pd.DataFrame, spec: SplitSpec) -> pd.DataFrame:
    """One row per assigned entity: unit_id (the group), label (its stratum: the emotion; for a
    subject one stratum for all who have a labelled video), video_id for the row strategy."""
    if spec.group_key == "subject":
        labelled = rows.groupby("group_id", sort=False)["emotion"].apply(lambda e: e.notna().any())
        return pd.DataFrame({"unit_id": labelled.index.to_numpy(), "label": _strata(labelled.to_numpy(dtype=bool))})
    units = pd.DataFrame({"unit_id": rows["group_id"].to_numpy(), "label": rows["emotion"].to_numpy()})
    return units.assign(video_id=rows["video_id"].to_numpy()) if spec.strategy == "row" else units


def _lineage(con: duckdb.DuckDBPyConnection, spec: SplitSpec) -> dict | None:
    """The newest published version of the same strategy and grouping, if any."""
    found = con.execute(
        "SELECT split_id, seed, params, fingerprint FROM split_runs WHERE status = 'published' "
        "AND strategy = ? AND group_by = ? ORDER BY created_at DESC, split_id DESC LIMIT 1",
        [spec.strategy, spec.group_key]).fetchall()
    if not found:
        return None
    split_id, seed, params, fp = found[0]
    return {"split_id": split_id, "seed": int(seed), "params": json.loads(params), "fingerprint": fp}


def _previous_units(con: duckdb.DuckDBPyConnection, split_id: str, spec: SplitSpec) -> pd.DataFrame:
    """The earlier version's assigned entities (unit_id = group), partition and stratum."""
    if spec.group_key == "subject":  # stored per video; the subject comes from the labels
        rows = con.execute(f"""SELECT coalesce(l.subject_id, s.unit_id) AS unit_id, s.partition, s.emotion
            FROM splits s LEFT JOIN ({_LABELS_SQL}) l USING (video_id) WHERE s.split_id = ?""", [split_id]).df()
        labelled = rows.groupby("unit_id", sort=False)["emotion"].apply(lambda e: e.notna().any())
        units = rows.drop_duplicates("unit_id")[["unit_id", "partition"]]
        return units.assign(label=_strata(units["unit_id"].map(labelled).to_numpy(dtype=bool)))
    rows = con.execute("SELECT unit_id, partition, emotion FROM splits WHERE split_id = ?", [split_id]).df()
    labels = unit_labels(rows[["unit_id", "emotion"]])
    units = rows.drop_duplicates("unit_id")[["unit_id", "partition"]]
    return units.assign(label=units["unit_id"].map(labels).to_numpy())


def resolve_seed(seed: int | None, mode: str, lineage: dict | None) -> int:
    """stable: the given seed, else the previous version's; reshuffle: the given seed, else the
    previous version's plus one (a fresh split)."""
    if seed is not None:
        return seed
    if lineage is None:
        return DEFAULT_SEED
    return lineage["seed"] + (1 if mode == "reshuffle" else 0)


def _expand(rows: pd.DataFrame, assignment: Assignment) -> pd.DataFrame:
    """The assignment at row level: every row gets its group's partition and label."""
    units = assignment.units.set_index("unit_id")
    out = rows[["unit_id", "group_id", "video_id", "frame", "face_id", "emotion"]].copy()
    if len(units) == len(rows) and (units.index == rows["group_id"].to_numpy()).all():
        out["partition"], out["label"] = units["partition"].to_numpy(), units["label"].to_numpy()
    else:
        out["partition"] = rows["group_id"].map(units["partition"]).to_numpy()
        out["label"] = rows["group_id"].map(units["label"]).to_numpy()
    return out


def _as_checked(split: pd.DataFrame) -> pd.DataFrame:
    """The split as the contract's rules see it: one unit per assigned entity (the group)."""
    return split.drop(columns=["unit_id"]).rename(columns={"group_id": "unit_id"})


def _check_context(spec: SplitSpec, units: pd.DataFrame, assignment: Assignment,
                   previous: pd.DataFrame | None) -> SplitCheck:
    row = spec.strategy == "row"
    return SplitCheck(
        eligible=pd.Index(units["unit_id"].unique()),
        stages=spec.stages,
        balance="stratified" if row else "per_class",
        group_column="unit_id" if spec.group_key == "subject" else "video_id",
        # the research procedure spreads a video's frames over pretrain/ssl/classifier/finetune;
        # its test holdout takes whole videos
        sides={p: ("test" if p == "test" else "train") for p in PARTITIONS} if row else {p: p for p in PARTITIONS},
        test_by_group=row,
        min_class_units=assignment.min_class_units,
        small_classes=assignment.small_classes,
        previous=previous,
    )


def partition_counts(split: pd.DataFrame) -> pd.DataFrame:
    """Rows per partition (index) and emotion (columns), partitions in their declared order."""
    emotion = split["emotion"].astype(object).where(split["emotion"].notna(), UNLABELLED)
    table = pd.crosstab(split["partition"], emotion)
    return table.reindex([p for p in ("pretrain", "ssl", "classifier", "finetune", "test")
                          if p in table.index])


def summary(con: duckdb.DuckDBPyConnection, split_id: str) -> pd.DataFrame:
    """Partition x emotion row counts of a stored version, by `SUMMARY_SQL`."""
    long = con.execute(SUMMARY_SQL, {"split_id": split_id}).df()
    if long.empty:
        return pd.DataFrame()
    table = long.pivot_table(index="partition", columns="emotion", values="rows", aggfunc="sum", fill_value=0)
    return table.reindex([p for p in ("pretrain", "ssl", "classifier", "finetune", "test") if p in table.index])


def _splits_table(split_id: str, split: pd.DataFrame) -> pa.Table:
    """The stored rows; `unit_id` is the unit trained and scored (a subject's video, not the subject)."""
    n = len(split)
    arrays = {
        "split_id": pa.array(np.full(n, split_id, dtype=object), pa.string()),
        **{c: pa.array(split[c].to_numpy(dtype=object), pa.string(), from_pandas=True)
           for c in ("unit_id", "video_id", "partition", "emotion")},
        "frame": pa.array(split["frame"], pa.int32(), from_pandas=True),
        "face_id": pa.array(split["face_id"], pa.int16(), from_pandas=True),
    }
    return pa.Table.from_pydict({c: arrays[c] for c in SPLITS.names}, schema=SPLITS.arrow_schema())


def _split_id(now: datetime, fp: str, spec: SplitSpec) -> str:
    tag = hashlib.sha256((fp + json.dumps(spec.params(), sort_keys=True)).encode()).hexdigest()[:8]
    return f"{now:%Y%m%dT%H%M%S%f}Z-{tag}"


def _write_version(wh: Warehouse, outcome: SplitOutcome, mode: str, lineage: dict | None,
                   split: pd.DataFrame, n_units: int) -> SplitOutcome:
    """Write the assignment (when the contract passed), then its split_runs record, last."""
    assert outcome.contract is not None
    now = datetime.now(UTC)
    split_id = _split_id(now, outcome.fingerprint, outcome.spec)
    passed = outcome.contract.passed
    if passed:
        write_atomic(wh.file_for("splits", split_id), _splits_table(split_id, split))
        failpoint("split-written", split_id)  # a kill here must leave the previous split current
    per_part = split["partition"].value_counts()
    record = {
        "split_id": split_id, "created_at": now, "status": "published" if passed else "rejected",
        "strategy": outcome.spec.strategy, "mode": mode, "group_by": outcome.spec.group_key,
        "seed": outcome.seed, "params": json.dumps(outcome.spec.params(), sort_keys=True),
        "fingerprint": outcome.fingerprint, "contract_result": outcome.contract.to_json(),
        "previous_split_id": lineage["split_id"] if lineage else None,
        "message": None if passed else outcome.contract.summary(),
        "units": n_units, "rows": len(split),
        **{f"{p}_rows": int(per_part.get(p, 0)) for p in PARTITIONS},
    }
    write_atomic(wh.file_for("split_runs", split_id), rows_to_table(SPLIT_RUNS, [record]))
    refresh_catalog(wh)
    status = "published" if passed else "rejected"
    message = (f"published split {split_id}" if passed
               else f"split rejected, previous split stays current: {outcome.contract.summary()}")
    if not passed:
        message += refusal_hint(outcome.contract, lineage, outcome.spec, mode)
    return dataclasses.replace(outcome, status=status, split_id=split_id, message=message,
                               sql=SUMMARY_SQL if passed else "")


def _shape(params: dict) -> dict:
    return {k: v for k, v in params.items() if k != "seed"}


def refusal_hint(contract: ContractResult, lineage: dict | None, spec: SplitSpec, mode: str) -> str:
    """What to change when a version is refused: which option, named as on the command line."""
    if lineage is None:
        return ""
    before = lineage["params"].get("fractions", {})
    if before.get("test") is not None and before["test"] != spec.stages.test:
        return (f" (this split's test holdout is {before['test']:g} of the units and never changes once "
                f"drawn: leave out --test-fraction to keep it)")
    if mode == "stable" and _shape(lineage["params"]) != _shape(spec.params()):
        return " (stable mode keeps earlier assignments: to apply changed fractions use --mode reshuffle)"
    if any(r.name == "holdout_unchanged" for r in contract.failed):
        return " (the test holdout is kept across versions: leave out --test-fraction)"
    return ""


def _fingerprint_rows(rows: pd.DataFrame) -> str:
    cols = [c for c in ("unit_id", "group_id", "video_id", "frame", "face_id", "path", "emotion") if c in rows.columns]
    return fingerprint(rows[cols])


def _with_lineage_test(spec: SplitSpec, lineage: dict | None) -> SplitSpec:
    """A test fraction left out keeps the lineage's: its holdout never changes once drawn."""
    if lineage is None:
        return spec
    test = lineage["params"].get("fractions", {}).get("test", spec.stages.test)
    return dataclasses.replace(spec, stages=dataclasses.replace(spec.stages, test=float(test)))


def publish_split(home: Path, spec: SplitSpec, mode: str = "stable", seed: int | None = None,
                  dry_run: bool = False, test_given: bool = True) -> SplitOutcome:
    """Split the warehouse's current units and publish the version if its contract passes.

    `spec.seed` is replaced by the resolved seed (see `resolve_seed`); without `test_given` the
    test fraction is the current version's of this strategy (its holdout is kept). Same data and
    same parameters as the newest version of this strategy: nothing is written (status `unchanged`)."""
    wh = Warehouse(home).init()
    with resplit_lock(wh.home):
        con = connect(wh)
        try:
            rows = load_rows(con, spec)
            lineage = _lineage(con, spec)
            if not test_given:
                spec = _with_lineage_test(spec, lineage)
            spec = dataclasses.replace(spec, seed=resolve_seed(seed, mode, lineage))
            fp = _fingerprint_rows(rows)
            if lineage and lineage["fingerprint"] == fp and lineage["params"] == spec.params():
                return SplitOutcome("unchanged", lineage["split_id"], fp, spec.seed, spec,
                                    summary(con, lineage["split_id"]), sql=SUMMARY_SQL,
                                    message=f"data and parameters unchanged; split {lineage['split_id']} stays")
            previous = _previous_units(con, lineage["split_id"], spec) if lineage else None
        finally:
            con.close()
        units = units_of(rows, spec)
        assignment = split_units(units, spec, previous, mode)
        split = _expand(rows, assignment)
        contract = check_split(_as_checked(split), _check_context(spec, units, assignment, previous))
        outcome = SplitOutcome("dry-run", None, fp, spec.seed, spec, partition_counts(split), contract,
                               message=f"dry run, nothing written: {contract.summary()}")
        if dry_run:
            return outcome
        return _write_version(wh, outcome, mode, lineage, split, int(split["unit_id"].nunique()))


def _class_columns(counts: pd.DataFrame, order: tuple[str, ...]) -> list[str]:
    cols = [str(c) for c in counts.columns]
    return [c for c in order if c in cols] + sorted(c for c in cols if c not in order)


def report_markdown(outcome: SplitOutcome) -> str:
    """The split report: partition x class counts, the contract's rules, and the SQL."""
    spec = outcome.spec
    lines = [f"# Split {outcome.split_id or '(not written)'}: {outcome.status}", "",
             f"strategy `{spec.strategy}`, group by `{spec.group_key}`, seed {outcome.seed}, "
             f"data fingerprint `{outcome.fingerprint}`", "", outcome.message, ""]
    table = counts_table(outcome.counts, spec.class_order)
    if not table.empty:
        lines += ["| partition | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
        lines += [f"| {part} | " + " | ".join(str(v) for v in row) + " |" for part, row in table.iterrows()]
        lines.append("")
    if outcome.contract is not None:
        lines += [f"- {'pass' if r.passed else 'FAIL'} `{r.name}`: {r.message}" for r in outcome.contract.rules]
        lines.append("")
    if outcome.sql:
        lines += ["Counts from:", "```sql", outcome.sql.replace("$split_id", f"'{outcome.split_id}'"), "```"]
    return "\n".join(lines)


def counts_table(counts: pd.DataFrame, class_order: tuple[str, ...]) -> pd.DataFrame:
    """Partition x class counts with classes in `class_order` (then the rest) and a total column."""
    if counts.empty:
        return counts
    table = counts.copy()
    table.columns = [str(c) for c in table.columns]
    table = table[_class_columns(table, class_order)].astype(int)
    table["total"] = table.sum(axis=1)
    table.index.name = "partition"
    return table


def split_record(con: duckdb.DuckDBPyConnection, split_id: str | None = None) -> dict | None:
    """A split_runs record: the given version, or the current (newest published) one."""
    where = "split_id = ?" if split_id else "status = 'published'"
    found = con.execute(f"SELECT * FROM split_runs WHERE {where} ORDER BY created_at DESC, split_id DESC LIMIT 1",
                        [split_id] if split_id else []).df()
    return None if found.empty else found.iloc[0].to_dict()
