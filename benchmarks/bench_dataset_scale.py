"""The warehouse at image-dataset scale: 500,000 image items, sharded, through the real writer.

    .venv/bin/python benchmarks/bench_dataset_scale.py [--items 500000] [--compare 20000]

Synthetic image items (one frame each, the columns MediaPipe fills: 68 landmarks, pose, face
box, 52 blendshapes, the AU estimates) are written the way `build-features` writes a shard —
`PartitionWriter` for `frames`, `tasks.load.commit_unit` for `labels` and `videos` — in shards of
`tasks.plan.SHARD_MAX_ITEMS`. Then, on that warehouse:
  files        data files per table (bounded by volume: items / shard size, not items)
  inventory    reading what the warehouse holds, which every build-features run does first
               (`warehouse.inventory`): the floor under a no-op re-run of a big dataset
  publish      the first `frames` snapshot, and the publish after one more shard
  queries      a per-label aggregate (join with labels), a point lookup of one image, through
               `affectflow query`'s connection (`warehouse.catalog.connect`)
`--compare N` also writes N items one file per item (the layout before shards) and N sharded,
and times the same steps on both: the reason for the layout, measured.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, scratch_dir, write_results  # noqa: E402

from data_contracts import CONTRACT_VERSION, FRAMES  # noqa: E402
from data_contracts.tables import MEDIAPIPE_BLENDSHAPES, blendshape_column  # noqa: E402
from tasks.load import commit_unit, now  # noqa: E402
from tasks.plan import SHARD_MAX_ITEMS  # noqa: E402
from warehouse import Warehouse, snapshot  # noqa: E402
from warehouse.catalog import connect  # noqa: E402
from warehouse.inventory import Inventory  # noqa: E402
from warehouse.writer import PartitionWriter  # noqa: E402

EMOTIONS = ("angry", "sad", "happy", "neutral", "fear", "disgust", "surprise", "contempt")
FILLED = ([f"{a}_{i}" for a in "xy" for i in range(68)] + [f"pose_{k}{a}" for k in "TR" for a in "xyz"]
          + ["face_x", "face_y", "face_w", "face_h"] + [blendshape_column(b) for b in MEDIAPIPE_BLENDSHAPES[1:]]
          + [c.name for c in FRAMES.columns if c.name.startswith("est_AU") and c.name.endswith("_r")])
QUERIES = {
    "per-label aggregate": "SELECT l.emotion, count(*) n, avg(f.bs_mouth_smile_left) smile, avg(f.pose_Ry) yaw "
                           "FROM frames f JOIN labels l USING (video_id) GROUP BY 1",
    "point lookup": "SELECT * FROM frames WHERE video_id = '{vid}'",
    "count": "SELECT count(*) FROM frames",
}


def _ids(start: int, n: int) -> list[str]:
    return [hashlib.sha256(f"img{i}".encode()).hexdigest()[:20] for i in range(start, start + n)]


def _frames(ids: list[str], rng: np.random.Generator) -> pa.RecordBatch:
    n = len(ids)
    arrays = []
    for c in FRAMES.columns:
        if c.name in ("source_id", "video_id"):
            arrays.append(pa.array(ids, pa.string()))
        elif c.name in ("frame", "face_id", "timestamp"):
            arrays.append(pa.array(np.zeros(n), c.arrow_type))
        elif c.name == "success":
            arrays.append(pa.array(np.ones(n, dtype=np.int8)))
        elif c.name in FILLED:
            arrays.append(pa.array(rng.random(n, dtype=np.float32), c.arrow_type))
        else:
            arrays.append(pa.nulls(n, c.arrow_type))
    return pa.RecordBatch.from_arrays(arrays, schema=FRAMES.arrow_schema())


def _write_unit(wh: Warehouse, key: str, ids: list[str], rng: np.random.Generator) -> None:
    with PartitionWriter(wh.file_for("frames", key), FRAMES.arrow_schema()) as writer:
        writer.write(_frames(ids, rng))
        writer.commit()
    when = now()
    videos = [{"source_id": i, "video_id": i, "path": f"/data/faces/{i}.jpg", "kind": "image", "n_frames": 1,
               "n_face_frames": 1, "face_rate": 1.0, "width": 256, "height": 256, "bytes": 20_000,
               "mtime_ns": 0, "partial": False, "extractor": "mediapipe", "extractor_version": "bench",
               "extractor_config": "{}", "config_hash": "bench", "contract_version": CONTRACT_VERSION,
               "run_id": "bench", "extracted_at": when} for i in ids]
    labels = [{"video_id": i, "source_id": i, "emotion": EMOTIONS[int(i[:4], 16) % len(EMOTIONS)],
               "label_source": "folder"} for i in ids]
    commit_unit(wh, key, videos, labels)


def build(home: Path, items: int, per_file: int, start: int = 0) -> tuple[Warehouse, float]:
    wh = Warehouse(home, url="").init()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for first in range(start, start + items, per_file):
        ids = _ids(first, min(per_file, start + items - first))
        _write_unit(wh, f"shard-{first:09d}" if per_file > 1 else ids[0], ids, rng)
    return wh, time.perf_counter() - t0


def _files(wh: Warehouse) -> dict[str, int]:
    return {t: len(wh.files(t)) for t in ("frames", "videos", "labels")}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _query_times(wh: Warehouse, vid: str) -> dict[str, float]:
    out = {}
    for name, sql in QUERIES.items():
        def run(sql=sql):
            con = connect(wh)  # what one `affectflow query` does: connect, then query
            try:
                con.sql(sql.format(vid=vid)).fetchall()
            finally:
                con.close()
        run()
        out[name] = min(_timed(run) for _ in range(2))
    return out


def measure(home: Path, items: int, per_file: int) -> dict:
    wh, write_s = build(home, items, per_file)
    figures = {"items": items, "per_file": per_file, "write_s": round(write_s, 2), "files": _files(wh)}
    figures["inventory_s"] = round(_timed(lambda: Inventory(wh)), 3)
    figures["first_publish_s"] = round(_timed(lambda: snapshot.publish(wh)), 2)
    build(home, min(per_file, 256), per_file, start=items)  # one more shard's worth
    figures["publish_after_one_more_s"] = round(_timed(lambda: snapshot.publish(wh)), 2)
    figures["queries_s"] = {k: round(v, 3) for k, v in _query_times(wh, _ids(items // 2, 1)[0]).items()}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=500_000)
    parser.add_argument("--compare", type=int, default=20_000, help="items for the layout comparison (0: skip)")
    args = parser.parse_args()
    header(f"warehouse at dataset scale: {args.items:,} image items in shards of {SHARD_MAX_ITEMS}")
    results: dict = {}
    if args.compare:
        for label, per_file in (("one file per item", 1), ("shards", SHARD_MAX_ITEMS)):
            results[f"compare {label}"] = figures = measure(scratch_dir("scale-cmp"), args.compare, per_file)
            print(f"  {args.compare:,} items, {label:18s}: {figures['files']['frames']:6,} files/table, "
                  f"write {figures['write_s']:7.2f} s, inventory {figures['inventory_s']:6.3f} s, "
                  f"publish {figures['first_publish_s']:6.2f} s (+1: {figures['publish_after_one_more_s']:5.2f} s), "
                  + ", ".join(f"{k} {v:.3f} s" for k, v in figures["queries_s"].items()))
    results["dataset"] = figures = measure(scratch_dir("scale"), args.items, SHARD_MAX_ITEMS)
    print(f"  {args.items:,} items: {figures['files']} data files per table; written in {figures['write_s']:.1f} s")
    print(f"  inventory (start of every build-features run): {figures['inventory_s']:.3f} s")
    print(f"  snapshot publish: first {figures['first_publish_s']:.2f} s, after one more shard "
          f"{figures['publish_after_one_more_s']:.2f} s")
    for name, seconds in figures["queries_s"].items():
        print(f"  query, {name}: {seconds:.3f} s (connect + query, warm)")
    write_results("dataset_scale", results, notes=f"synthetic image items, shards of {SHARD_MAX_ITEMS}")


if __name__ == "__main__":
    main()
