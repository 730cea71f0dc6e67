"""`resplit` time at 10k, 100k and 1M units: linear?, and 1M under 30 s?

    .venv/bin/python benchmarks/bench_resplit.py [--sizes 10000,100000,1000000]

For each size, a fresh warehouse holds that many synthetic labelled videos (the default grouped
strategy's unit is a video; `videos` and `labels` rows written as 100k-row Parquet files, 8
emotions with unequal counts) and `tasks.publish_split.publish_split` publishes a default split
(read, split, check the contract, write the version), timed end to end, best of `--repeat`
fresh warehouses. The baseline in the same run is what a user would otherwise write: two
stratified `sklearn.model_selection.train_test_split` calls on the same unit ids and labels
(no grouping, no contract, no writing). Linearity: the marginal cost per unit between
consecutive sizes, (t[i] - t[i-1]) / (n[i] - n[i-1]), stays flat (fixed costs cancel out).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, scratch_dir, write_results  # noqa: E402

from data_contracts import LABELS, VIDEOS  # noqa: E402
from tasks.publish_split import publish_split  # noqa: E402
from tasks.split import SplitSpec  # noqa: E402
from warehouse import Warehouse  # noqa: E402
from warehouse.writer import write_atomic  # noqa: E402

EMOTIONS = ("angry", "sad", "happy", "neutral", "fear", "disgust", "surprise", "contempt")
WEIGHTS = np.array([8, 7, 6, 5, 4, 3, 2, 1], dtype=float)  # unequal classes, like real data
FILE_ROWS = 100_000
TARGET_S = 30.0


def _constant(value, n: int, type_: pa.DataType) -> pa.Array:
    return pa.array([value] * n, type_) if n <= 16 else pa.repeat(pa.scalar(value, type_), n)


def _table(table, n: int, given: dict) -> pa.Table:
    """A contract table of `n` rows: given columns, a plausible constant elsewhere (null where allowed)."""
    defaults = {"string": "x", "int32": 1, "int64": 1, "float32": 1.0, "float64": 1.0}
    arrays = []
    for col in table.columns:
        if col.name in given:
            arrays.append(given[col.name])
        elif col.nullable:
            arrays.append(pa.nulls(n, col.arrow_type))
        elif col.dtype == "timestamp":
            arrays.append(_constant(datetime.now(UTC), n, col.arrow_type))
        else:
            value = col.allowed[0] if col.allowed else defaults[col.dtype]
            arrays.append(_constant(value, n, col.arrow_type))
    return pa.Table.from_arrays(arrays, schema=table.arrow_schema())


def build(home: Path, units: int, seed: int = 0) -> None:
    """`units` labelled videos with faces, in 100k-row `videos` and `labels` files."""
    wh = Warehouse(home).init()
    rng = np.random.default_rng(seed)
    emotion = rng.choice(len(EMOTIONS), size=units, p=WEIGHTS / WEIGHTS.sum())
    for part, start in enumerate(range(0, units, FILE_ROWS)):
        stop = min(start + FILE_ROWS, units)
        n = stop - start
        ids = pa.array([f"v{i:09d}" for i in range(start, stop)], pa.string())
        frames = pa.array(np.full(n, 100, np.int32))
        write_atomic(wh.file_for("videos", f"bench-{part:04d}"), _table(VIDEOS, n, {
            "source_id": ids, "video_id": ids, "path": ids, "kind": _constant("video", n, pa.string()),
            "n_frames": frames, "n_face_frames": frames, "extractor": _constant("mediapipe", n, pa.string())}))
        labels = pa.array(np.array(EMOTIONS, dtype=object)[emotion[start:stop]], pa.string())
        write_atomic(wh.file_for("labels", f"bench-{part:04d}"), _table(LABELS, n, {
            "video_id": ids, "source_id": ids, "emotion": labels, "label_source": _constant("folder", n, pa.string())}))


def publish_seconds(units: int, repeat: int) -> tuple[float, str]:
    best, status = float("inf"), ""
    for _ in range(repeat):
        home = scratch_dir("resplit")
        build(home, units)
        started = time.perf_counter()
        outcome = publish_split(home, SplitSpec())
        best = min(best, time.perf_counter() - started)
        status = outcome.status
        if status != "published":
            raise SystemExit(f"{units} units: split {status}: {outcome.message}")
    return best, status


def sklearn_seconds(units: int, repeat: int) -> float:
    """Two stratified train_test_split calls (pretrain vs labelled, then labelled 70/30)."""
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(0)
    ids = np.array([f"v{i:09d}" for i in range(units)], dtype=object)
    labels = rng.choice(len(EMOTIONS), size=units, p=WEIGHTS / WEIGHTS.sum())
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        _, labelled, _, y = train_test_split(ids, labels, test_size=0.3, stratify=labels, random_state=42)
        train_test_split(labelled, y, test_size=0.3, stratify=y, random_state=42)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=2, help="fresh warehouses per size (best kept)")
    args = parser.parse_args()
    header("resplit: publish_split (grouped, default) vs two sklearn train_test_split calls, same run")
    sizes = [int(s) for s in args.sizes.split(",")]
    figures: dict = {}
    print(f"  {'units':>9}{'publish s':>11}{'sklearn s':>11}{'x sklearn':>11}{'us/unit':>9}{'marginal us/unit':>18}")
    publish_seconds(1000, 1)  # one-time costs (imports, DuckDB start-up) stay out of the figures
    previous: tuple[int, float] | None = None
    for units in sizes:
        seconds, _ = publish_seconds(units, args.repeat)
        baseline = sklearn_seconds(units, args.repeat)
        marginal = (seconds - previous[1]) / (units - previous[0]) * 1e6 if previous else None
        figures[str(units)] = {"publish_s": seconds, "sklearn_s": baseline, "ratio_to_sklearn": seconds / baseline,
                               "us_per_unit": seconds / units * 1e6, "marginal_us_per_unit": marginal}
        print(f"  {units:>9,}{seconds:>11.2f}{baseline:>11.3f}{seconds / baseline:>11.1f}{seconds / units * 1e6:>9.1f}"
              f"{'' if marginal is None else f'{marginal:.1f}':>18}", flush=True)
        previous = (units, seconds)
    largest = figures[str(sizes[-1])]
    marginals = [figures[str(n)]["marginal_us_per_unit"] for n in sizes[1:]]
    growth = marginals[-1] / marginals[0] if len(marginals) >= 2 and marginals[0] > 0 else 1.0
    linear = growth <= 1.5
    print(f"  linear: {'yes' if linear else 'no'} (marginal cost per unit at the largest step is {growth:.2f}x "
          f"the first step's; the fixed cost per publish is what makes small sizes dearer per unit)")
    if sizes[-1] >= 1_000_000:
        print(f"  {sizes[-1]:,} units in {largest['publish_s']:.1f} s: "
              f"{'meets' if largest['publish_s'] < TARGET_S else 'misses'} the {TARGET_S:.0f} s target")
    write_results("resplit", {"strategy": "grouped (default)", "sizes": figures, "linear": linear,
                              "marginal_growth": growth, "target_s": TARGET_S})


if __name__ == "__main__":
    main()
