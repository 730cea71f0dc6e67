"""The warehouse on an object store: `build-features` writes to a real S3-compatible server
(moto's server mode, started here), `affectflow query` reads the counts of a local run, a rerun
changes nothing, and another machine rebuilds the catalog from the objects alone."""

import json
import subprocess

import duckdb
import pytest

from tests.conftest import BIN, run_cli
from tests.s3_server import BUCKET, aws_env, make_bucket, moto_server

pytestmark = pytest.mark.slow

OPENFACE_FRAMES = 472 + 72 + 95 + 169 + 169
PER_VIDEO = ("select v.path, count(*) n, sum(f.success) s, count(x_0) x from frames f join videos v using (video_id) "
             "group by 1 order by 1")
COUNTS = ("select (select count(*) from frames) frames, (select count(*) from videos) videos, "
          "(select count(*) from labels) labels, (select count(*) from quarantine) quarantine, "
          "(select count(*) from runs) runs")


@pytest.fixture()
def s3_env(prefect_server, tmp_path):
    """CLI environment with the warehouse at s3://<bucket>/lab; yields it and a client on the bucket."""
    with moto_server(tmp_path) as endpoint:
        bucket = make_bucket(endpoint)
        env = {**prefect_server, **aws_env(endpoint), "AFFECTFLOW_HOME": str(tmp_path / "machine_a"),
               "AFFECTFLOW_WAREHOUSE_URL": f"s3://{BUCKET}/lab", "AFFECTFLOW_OFFLINE": "1"}
        yield env, bucket


def _cli(args: list[str], env: dict) -> str:
    result = run_cli(["affectflow", *args], env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _build(source: str, env: dict) -> dict:
    return json.loads(_cli(["build-features", source, "--extractor", "openface-csv", "--json"], env))


def _query(sql: str, env: dict) -> list[dict]:
    return json.loads(_cli(["query", sql, "--format", "json"], env))


def _objects(bucket, table: str) -> dict[str, str]:
    """Key -> ETag (the MD5 of the bytes) of a table's objects."""
    return {key: info["ETag"] for key, info in bucket.find(f"{BUCKET}/lab/{table}", detail=True).items()}


def test_build_features_on_s3_matches_a_local_run(s3_env, shared_dir, tmp_path):
    env, bucket = s3_env
    source = str(shared_dir / "fixtures/openface/mode_A")
    local_env = {k: v for k, v in env.items() if k != "AFFECTFLOW_WAREHOUSE_URL"}
    local_env["AFFECTFLOW_HOME"] = str(tmp_path / "local")

    assert _build(source, local_env)["loaded"] == 5
    assert _build(source, env)["loaded"] == 5
    assert not (tmp_path / "machine_a" / "parquet").exists()  # the data went to the bucket only
    assert len(_objects(bucket, "frames")) == 1 + 1  # the five small files are one shard, plus the schema seed
    expected = _query(PER_VIDEO, local_env)
    assert sum(r["n"] for r in expected) == OPENFACE_FRAMES
    assert _query(PER_VIDEO, env) == expected
    assert _query(COUNTS, env) == _query(COUNTS, local_env)

    stored = {t: _objects(bucket, t) for t in ("frames", "videos", "labels", "quarantine")}
    again = _build(source, env)
    assert (again["loaded"], again["skipped"], again["quarantined"], again["flow_run"]) == (0, 5, 0, False)
    assert {t: _objects(bucket, t) for t in stored} == stored  # same objects, same bytes
    assert _query(PER_VIDEO, env) == expected
    assert _query("select count(*) n from runs", env) == [{"n": 1}]  # nothing to do: no flow run


def test_another_machine_rebuilds_the_catalog_from_the_objects(s3_env, shared_dir, tmp_path):
    env, bucket = s3_env
    _build(str(shared_dir / "fixtures/openface/mode_A"), env)
    other = {**env, "AFFECTFLOW_HOME": str(tmp_path / "machine_b")}  # no catalog, locks or index
    assert not (tmp_path / "machine_a" / "snapshots" / "current.duckdb").exists()  # a worker downloads nothing
    assert "frames snapshot" in _cli(["warehouse", "rebuild"], other)
    assert (tmp_path / "machine_b" / "snapshots" / "current.duckdb").exists()
    catalog = tmp_path / "machine_b" / "warehouse.duckdb"
    with duckdb.connect(str(catalog), read_only=True) as con:
        con.register_filesystem(bucket)
        assert con.execute("select count(*) from frames").fetchone() == (OPENFACE_FRAMES,)
        assert con.execute("select count(*) from videos").fetchone() == (5,)
    assert _query("select count(*) n from frames", other) == [{"n": OPENFACE_FRAMES}]
    info = _cli(["warehouse", "info"], other)
    assert f"s3://{BUCKET}/lab" in info


def test_two_machines_on_one_bucket_load_each_item_once(s3_env, shared_dir, tmp_path):
    """Two machines (separate AFFECTFLOW_HOME, so their file locks never meet) run the same
    folder at the same time; each item is slowed to 2 s inside its lock. The Prefect item slots
    make one machine load each item and the other skip it (without them both load all five)."""
    env, _ = s3_env
    source = str(shared_dir / "fixtures/openface/mode_A")
    args = [str(BIN / "affectflow"), "build-features", source, "--extractor", "openface-csv", "--json"]
    runs = [subprocess.Popen(args, env={**env, "AFFECTFLOW_HOME": str(tmp_path / name),
                                        "AFFECTFLOW_FAILPOINTS": "frames-written=sleep:2"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in ("machine_a", "machine_b")]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]
    summaries = [json.loads(out) for out, _ in outputs]
    assert sum(s["loaded"] for s in summaries) == 5
    assert sum(s["skipped"] for s in summaries) == 5
    assert _query("select count(*) n from frames", env) == [{"n": OPENFACE_FRAMES}]


def test_an_unreachable_object_store_is_one_clear_error(tmp_path):
    env = {**aws_env("http://127.0.0.1:9"), "PATH": "/usr/bin:/bin", "AFFECTFLOW_HOME": str(tmp_path),
           "AFFECTFLOW_WAREHOUSE_URL": f"s3://{BUCKET}/lab", "AWS_MAX_ATTEMPTS": "1"}
    result = run_cli(["affectflow", "query", "select count(*) from frames"], env, timeout=120)
    assert result.returncode == 1
    assert f"cannot reach s3://{BUCKET}/lab: EndpointConnectionError" in result.stderr
    assert "AWS_ENDPOINT_URL" in result.stderr and "Traceback" not in result.stderr
