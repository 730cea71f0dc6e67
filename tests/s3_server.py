"""A real S3-compatible server for tests: moto's server mode on 127.0.0.1, a free port, and a
bucket made by the test through the S3 API (not a mock object: clients speak HTTP to it)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from affectflow.local_prefect import free_port, stop, wait_http

BUCKET = "affectflow-test"


def aws_env(endpoint: str) -> dict[str, str]:
    """What a client needs to reach the server (boto/s3fs read these; the keys are moto's
    throwaway test credentials)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """Start `python -m moto.server`; yield its endpoint URL; stop it afterwards."""
    port = free_port()
    log = log_dir / "moto.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{endpoint}/moto-api/", proc, 60, log)
        yield endpoint
    finally:
        stop(proc)


def make_bucket(endpoint: str, name: str = BUCKET):
    """Create the bucket through the S3 API; returns an s3fs client for checking what is stored."""
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint,
                           skip_instance_cache=True, use_listings_cache=False)
    fs.mkdir(name)
    return fs


def forget_clients() -> None:
    """fsspec caches filesystems by their arguments, and the endpoint comes from the environment:
    drop cached clients so a new server on a new port is not reached through an old one."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
