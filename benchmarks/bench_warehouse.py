"""Warehouse: ingest rows/s, and query latency at 1M and 10M synthetic frames, Parquet views
(the current design) vs native DuckDB tables loaded from the same files.

    .venv/bin/python benchmarks/bench_warehouse.py [--sizes 1000000:1000,10000000:2000] [--data-dir DIR] [--with-native]

Synthetic frames use the contract schema (`FRAMES.arrow_schema()`, 800 columns) with the columns
real extractors fill most filled (68 landmarks at 0.1 px like OpenFace writes them, 17 AU
intensities, 18 AU presences, 6 pose values; the rest null), one Parquet file per video
(`rows:videos`: 1M rows = 1000 videos of 1000 frames, 10M = 2000 videos of 5000 frames) written by
`warehouse.writer.write_atomic`, plus one `labels` file per video (8 emotions).

Ingest: rows/s through `write_atomic` (zstd, 32k-row groups, fsync, rename) against plain
`pyarrow.parquet.write_table` defaults on the same tables (baseline), and the native load
(`CREATE TABLE … AS SELECT * FROM read_parquet(…)`).
Queries (warm OS cache, best of 2, and the first run): a per-video aggregate, a per-label AU mean
(join with labels), a point lookup of one video's frames (its 184 filled columns, to Arrow), on
  views        `warehouse.catalog.connect` (the current design: in-memory DuckDB, views over Parquet)
  views+cache  the same with DuckDB's `parquet_metadata_cache` on (footers parsed once per connection)
  native       (`--with-native`) DuckDB tables in a database file, loaded from the same Parquet
               files (the 184 filled columns of `frames`; what the snapshot holds, loaded in one go)
  snapshot     the design in use: `connect()` with the native-table snapshot that each writing
               flow publishes (`warehouse.snapshot`, all 800 columns, attached read-only), and
  snapshot+1   the same with one video written after the snapshot (read from its Parquet file)
and the cost of publishing: the first (full) snapshot, and an incremental one after one new video.
DuckDB gets the same threads (all cores) and memory limit in every layout.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, scratch_dir, write_results  # noqa: E402

from data_contracts import FRAMES, LABELS  # noqa: E402
from data_contracts.tables import OPENFACE_AUS_C, OPENFACE_AUS_R  # noqa: E402
from warehouse import Warehouse, snapshot  # noqa: E402
from warehouse.catalog import connect  # noqa: E402
from warehouse.writer import rows_to_table, write_atomic  # noqa: E402

LANDMARKS = [f"{a}_{i}" for a in "xy" for i in range(68)]
AUS_R = [f"AU{a:02d}_r" for a in OPENFACE_AUS_R]
AUS_C = [f"AU{a:02d}_c" for a in OPENFACE_AUS_C]
POSE = [f"pose_{k}{a}" for k in "TR" for a in "xyz"]
EMOTIONS = ("angry", "sad", "happy", "neutral", "fear", "disgust", "surprise", "contempt")
MEMORY_LIMIT = "4GB"
TARGET_S = 0.5
QUERIES = {
    "per-video aggregate": "SELECT video_id, count(*) AS frames, avg(success) AS face_rate, avg(AU12_r) AS smile, "
                           "avg(pose_Rx) AS pitch FROM frames GROUP BY video_id",
    "per-label AU mean": "SELECT l.emotion, " + ", ".join(f"avg(f.{c}) AS {c}" for c in AUS_R)
                         + " FROM frames f JOIN labels l USING (video_id) WHERE f.success = 1 GROUP BY l.emotion",
    "point lookup (1 video)": "SELECT {filled} FROM frames WHERE video_id = $vid ORDER BY frame",
}
KEYS = ["source_id", "video_id", "frame", "face_id", "timestamp", "success", "confidence"]
FILLED = ", ".join(KEYS + LANDMARKS + AUS_R + AUS_C + POSE)
BLOCKS = 16  # distinct feature blocks, shared by the videos (values repeat across files; costs do not)


def video_id(i: int) -> str:
    return hashlib.sha256(f"bench-video-{i}".encode()).hexdigest()[:20]


def feature_block(n: int, rng: np.random.Generator) -> pa.Table:
    """`n` frames of every contract column but the two ids; unfilled columns are null."""
    cols: dict[str, pa.Array] = {
        "frame": pa.array(np.arange(n, dtype=np.int32)), "face_id": pa.array(np.zeros(n, np.int16)),
        "timestamp": pa.array(np.arange(n) / 30.0), "success": pa.array((rng.random(n) > 0.05).astype(np.int8)),
        "confidence": pa.array(rng.random(n, dtype=np.float32)),
    }
    landmarks = rng.random(136, dtype=np.float32) * 400 + np.round(rng.standard_normal((n, 136), dtype=np.float32) * 8, 1)
    intensity = np.round(rng.random((n, len(AUS_R)), dtype=np.float32) * 5, 2)
    presence = (rng.random((n, len(AUS_C))) > 0.7).astype(np.float32)
    pose = rng.standard_normal((n, 6), dtype=np.float32) * 0.3
    for names, values in ((LANDMARKS, landmarks), (AUS_R, intensity), (AUS_C, presence), (POSE, pose)):
        cols.update({name: pa.array(values[:, j]) for j, name in enumerate(names)})
    schema = pa.schema([f for f in FRAMES.arrow_schema() if f.name not in ("source_id", "video_id")])
    return pa.Table.from_arrays([cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in schema], schema=schema)


def frames_table(vid: str, block: pa.Table) -> pa.Table:
    """One video's frames in the contract schema: its ids on a feature block."""
    ids = pa.array([vid] * block.num_rows, pa.string())
    columns = {"source_id": ids, "video_id": ids}
    schema = FRAMES.arrow_schema()
    return pa.Table.from_arrays([columns[f.name] if f.name in columns else block.column(f.name) for f in schema],
                                schema=schema)


def _write_videos(home: str, first: int, count: int, frames: int) -> tuple[float, int]:
    """Worker: generate and write videos [first, first+count); returns (write seconds, rows)."""
    wh = Warehouse(Path(home))
    rng = np.random.default_rng(first)
    blocks = [feature_block(frames, rng) for _ in range(min(BLOCKS, count))]
    spent = 0.0
    for i in range(first, first + count):
        vid = video_id(i)
        table = frames_table(vid, blocks[i % len(blocks)])
        labels = rows_to_table(LABELS, [{"video_id": vid, "source_id": vid, "emotion": EMOTIONS[i % len(EMOTIONS)],
                                         "label_source": "folder"}])
        started = time.perf_counter()
        write_atomic(wh.file_for("frames", vid), table)
        write_atomic(wh.file_for("labels", vid), labels)
        spent += time.perf_counter() - started
    return spent, count * frames


def generate(home: Path, videos: int, frames: int, workers: int = 2) -> dict:
    """Write the synthetic warehouse (reused when a finished one is there); ingest figures."""
    marker = home / "_complete"
    if marker.exists():
        print(f"  reusing {home}")
        return {}
    Warehouse(home).init()
    chunks = np.array_split(np.arange(videos), workers * 2)
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        done = list(pool.map(_write_videos, [str(home)] * len(chunks), [int(c[0]) for c in chunks],
                             [len(c) for c in chunks], [frames] * len(chunks)))
    wall = time.perf_counter() - started
    rows = sum(r for _, r in done)
    marker.touch()
    return {"rows": rows, "files": videos, "generate_and_write_wall_s": wall,
            "write_atomic_rows_per_s_per_process": rows / sum(s for s, _ in done)}


def ingest_baseline(frames: int, n: int = 20) -> dict:
    """write_atomic vs pyarrow defaults on the same `n` tables, in this process."""
    rng = np.random.default_rng(7)
    tables = [frames_table(video_id(10_000_000 + i), feature_block(frames, rng)) for i in range(n)]
    scratch = scratch_dir("ingest")
    out = {}
    for name, write in (("pyarrow write_table defaults", lambda t, p: pq.write_table(t, p)),
                        ("write_atomic (zstd, fsync, rename)", lambda t, p: write_atomic(p, t))):
        started = time.perf_counter()
        for i, table in enumerate(tables):
            write(table, scratch / f"{i}.parquet")
        out[name] = n * frames / (time.perf_counter() - started)
        sizes = sum(p.stat().st_size for p in scratch.glob("*.parquet"))
        out[name + " MB"] = sizes / 2**20
        for p in scratch.glob("*.parquet"):
            p.unlink()
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def _tune(con) -> None:
    con.execute(f"SET memory_limit='{MEMORY_LIMIT}'")


def view_connection(home: Path, cache: bool):
    con = connect(Warehouse(home), use_snapshot=False)
    _tune(con)
    if cache:
        con.execute("SET parquet_metadata_cache=true")
    return con


def native_connection(home: Path, db: Path) -> tuple[object, dict]:
    """A DuckDB database file with `frames` (its filled columns) and `labels` loaded from the Parquet
    files. Storage is columnar, so the all-null columns left out cost nothing at query time (they
    would cost load time: DuckDB materialises 616 null columns slower than the 184 filled ones)."""
    import duckdb

    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    _tune(con)
    wh = Warehouse(home)
    started = time.perf_counter()
    for table, columns in (("frames", FILLED), ("labels", "*")):
        con.execute(f"CREATE TABLE {table} AS SELECT {columns} FROM read_parquet('{wh.glob(table)}')")
    con.execute("CHECKPOINT")
    seconds = time.perf_counter() - started
    rows = con.execute("SELECT count(*) FROM frames").fetchall()[0][0]
    return con, {"load_s": seconds, "rows_per_s": rows / seconds, "db_mb": db.stat().st_size / 2**20}


def snapshot_layouts(home: Path, vid: str, frames: int) -> tuple[dict, dict]:
    """Queries through `connect()` on a freshly published snapshot, then with one video newer
    than it; the publish times (full, then incremental) go in the second dict."""
    shutil.rmtree(home / "snapshots", ignore_errors=True)
    wh = Warehouse(home)
    started = time.perf_counter()
    snapshot.publish(wh)
    cost = {"full_publish_s": time.perf_counter() - started,
            "snapshot_mb": snapshot.current(wh).stat().st_size / 2**20}
    layouts = {"snapshot": time_queries(_tuned(connect(wh)), vid)}
    extra = video_id(20_000_000)
    block = feature_block(frames, np.random.default_rng(3))
    write_atomic(wh.file_for("frames", extra), frames_table(extra, block))
    write_atomic(wh.file_for("labels", extra), rows_to_table(LABELS, [{"video_id": extra, "source_id": extra,
                                                                        "emotion": "sad", "label_source": "folder"}]))
    try:
        layouts["snapshot+1"] = time_queries(_tuned(connect(wh)), vid)
        started = time.perf_counter()
        snapshot.publish(wh)
        cost["incremental_publish_s"] = time.perf_counter() - started
    finally:
        wh.file_for("frames", extra).unlink()
        wh.file_for("labels", extra).unlink()
    return layouts, cost


def _tuned(con):
    _tune(con)
    return con


def time_queries(con, vid: str, repeat: int = 2) -> dict:
    out = {}
    for name, sql in QUERIES.items():
        params = {"vid": vid} if "$vid" in sql else {}
        sql = sql.replace("{filled}", FILLED)
        times = []
        for _ in range(repeat + 1):
            started = time.perf_counter()
            result = con.sql(sql, params=params).to_arrow_table()
            times.append(time.perf_counter() - started)
        out[name] = {"first_s": times[0], "best_s": min(times[1:]), "rows": result.num_rows}
    return out


def bench_size(rows: int, videos: int, data_dir: Path, with_native: bool) -> dict:
    frames = rows // videos
    home = data_dir / f"wh_{rows}"
    print(f"\n{rows:,} frames = {videos} videos x {frames} frames ({home})", flush=True)
    ingest = generate(home, videos, frames)
    if ingest:
        print(f"  generated + written in {ingest['generate_and_write_wall_s']:.0f} s (2 processes); write_atomic "
              f"{ingest['write_atomic_rows_per_s_per_process']:,.0f} rows/s per process")
    parquet_mb = sum(p.stat().st_size for p in (home / "parquet" / "frames").glob("*.parquet")) / 2**20
    vid = video_id(videos // 2)
    layouts = {"views": time_queries(view_connection(home, False), vid),
               "views+cache": time_queries(view_connection(home, True), vid)}
    load: dict = {}
    if with_native:
        con, load = native_connection(home, data_dir / f"native_{rows}.duckdb")
        layouts["native"] = time_queries(con, vid)
        con.close()
        (data_dir / f"native_{rows}.duckdb").unlink(missing_ok=True)
        print(f"  native load {load['load_s']:.1f} s ({load['rows_per_s']:,.0f} rows/s), "
              f"database file {load['db_mb']:,.0f} MB")
    snap_layouts, publish = snapshot_layouts(home, vid, frames)
    layouts.update(snap_layouts)
    print(f"  Parquet {parquet_mb:,.0f} MB")
    print(f"  snapshot: first publish {publish['full_publish_s']:.1f} s ({publish['snapshot_mb']:,.0f} MB), "
          f"after one new video {publish['incremental_publish_s']:.1f} s")
    _print_queries(layouts)
    return {"videos": videos, "frames_per_video": frames, "parquet_mb": parquet_mb, "ingest": ingest,
            "native_load": load, "snapshot_publish": publish, "queries": layouts}


def _print_queries(layouts: dict) -> None:
    print(f"  {'query':<24}" + "".join(f"{k + ' best/first s':>26}" for k in layouts) + f"{'views / snapshot':>18}")
    for query in QUERIES:
        cells = "".join(f"{layouts[k][query]['best_s']:>16.3f} / {layouts[k][query]['first_s']:<7.3f}" for k in layouts)
        ratio = layouts["views"][query]["best_s"] / layouts["snapshot"][query]["best_s"]
        print(f"  {query:<24}{cells}{ratio:>17.1f}x")


def verdict(results: dict) -> dict:
    largest = results[max(results, key=int)]
    agg = {k: v["per-video aggregate"]["best_s"] for k, v in largest["queries"].items()}
    winner = min(agg, key=agg.get)
    rows = int(max(results, key=int))
    print(f"\nper-video aggregate over {rows:,} frames: " + ", ".join(
        f"{k} {s:.3f} s ({'meets' if s < TARGET_S else 'misses'} the {TARGET_S} s target)" for k, s in agg.items()))
    for query in QUERIES:
        times = {k: v[query]["best_s"] for k, v in largest["queries"].items()}
        best = min(times, key=times.get)
        others = ", ".join(f"{times[k] / times[best]:.1f}x faster than {k}" for k in times if k != best)
        print(f"  {query}: {best} wins ({others})")
    return {"largest_rows": rows, "per_video_aggregate_s": agg, "fastest_layout": winner, "target_s": TARGET_S}


def parse_sizes(text: str) -> list[tuple[int, int]]:
    return [(int(r), int(v)) for r, v in (pair.split(":") for pair in text.split(","))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000:1000,10000000:2000", help="rows:videos, comma-separated")
    parser.add_argument("--data-dir", type=Path, help="keep the generated warehouses here and reuse them "
                        "(default: a temporary folder, removed at the end)")
    parser.add_argument("--with-native", action="store_true", help="also load plain native tables in one go "
                        "(the snapshot's content without its incremental publish; ~2 min more at 10M)")
    args = parser.parse_args()
    header("Warehouse: ingest and query latency, Parquet views vs native DuckDB tables")
    data_dir = args.data_dir or scratch_dir("warehouse")
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        baseline = ingest_baseline(frames=5000)
        print("ingest, 20 videos x 5000 frames, one process: " + ", ".join(
            f"{k} {v:,.0f} rows/s" for k, v in baseline.items() if not k.endswith("MB"))
              + f" (write_atomic at {baseline['write_atomic (zstd, fsync, rename)'] / baseline['pyarrow write_table defaults']:.2f}x"
              f" the defaults' speed, {baseline['write_atomic (zstd, fsync, rename) MB'] / baseline['pyarrow write_table defaults MB']:.2f}x their size)")
        results = {str(rows): bench_size(rows, videos, data_dir, args.with_native)
                   for rows, videos in parse_sizes(args.sizes)}
        figures = {"ingest_baseline": baseline, "sizes": results, "verdict": verdict(results),
                   "duckdb": {"threads": "all cores", "memory_limit": MEMORY_LIMIT}}
        write_results("warehouse", figures)
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
