"""Where the warehouse's Parquet tree lives: a local folder (default) or an object-store prefix.

`AFFECTFLOW_WAREHOUSE_URL=s3://bucket/prefix` puts the tree in an object store through fsspec
(s3fs for `s3://`; credentials and endpoint from the usual `AWS_*` variables), so workers on
several machines write to one place. Local paths stay `pathlib.Path`, exactly as before; an
object-store path is an `ObjectPath`, which offers the few pathlib methods the warehouse uses.

Object stores have no rename, but a PUT is atomic: a writer builds an item's file in a local
temporary file and uploads it as one object (`upload`), so readers see a whole object or none.
DuckDB reads the same objects through the fsspec filesystem registered on its connection
(`register`), not through its `httpfs` extension.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path, PurePosixPath

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem


class ObjectPath:
    """A key in an object store (`s3://bucket/prefix/frames/x.parquet`) with the pathlib methods
    the warehouse uses: `/`, name, stem, parent, exists, unlink, glob, mkdir."""

    __slots__ = ("fs", "key")

    def __init__(self, fs: fsspec.AbstractFileSystem, key: str):
        self.fs = fs
        self.key = key.strip("/")

    def __truediv__(self, part: str) -> ObjectPath:
        return ObjectPath(self.fs, f"{self.key}/{part}")

    def __str__(self) -> str:
        return self.fs.unstrip_protocol(self.key)

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: ObjectPath) -> bool:
        return str(self) < str(other)

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.key).stem

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(self.fs, str(PurePosixPath(self.key).parent))

    def exists(self) -> bool:
        return bool(self.fs.exists(self.key))

    def unlink(self, missing_ok: bool = False) -> None:
        if not self.exists():
            if missing_ok:
                return
            raise FileNotFoundError(str(self))
        self.fs.rm_file(self.key)

    def glob(self, pattern: str) -> list[ObjectPath]:
        return [ObjectPath(self.fs, key) for key in self.fs.glob(f"{self.key}/{pattern}")]

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: a prefix exists as soon as an object is stored under it."""

    def age_s(self) -> float:
        """Seconds since the object was last written."""
        return time.time() - self.fs.modified(self.key).timestamp()


StoragePath = Path | ObjectPath


def storage_root(home: Path, url: str | None) -> StoragePath:
    """The Parquet tree's root: `<home>/parquet` when `url` is unset, else the folder or
    object-store prefix it names (any fsspec URL; a plain path or `file://` stays local)."""
    if not url:
        return Path(home) / "parquet"
    try:
        # no listings cache: other machines add objects, and a cached listing would hide them
        fs, root = fsspec.core.url_to_fs(url, use_listings_cache=False)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"AFFECTFLOW_WAREHOUSE_URL={url!r}: {exc}") from None
    if isinstance(fs, LocalFileSystem):
        return Path(root)
    return ObjectPath(fs, root)


def read_table(path: StoragePath, columns: list[str] | None = None) -> pa.Table:
    if isinstance(path, ObjectPath):
        with path.fs.open(path.key, "rb") as fh:
            return pq.read_table(fh, columns=columns)
    return pq.read_table(path, columns=columns)


def read_schema(path: StoragePath) -> pa.Schema:
    if isinstance(path, ObjectPath):
        with path.fs.open(path.key, "rb") as fh:
            return pq.read_schema(fh)
    return pq.read_schema(path)


def staging_path(target: ObjectPath, tag: str) -> Path:
    """A local temporary file that becomes `target` on upload (named like the local writer's
    temporary files, `.<name>.<tag>.tmp`, in the system's temporary folder, `$TMPDIR`)."""
    return Path(tempfile.gettempdir()) / f".{target.name}.{tag}.tmp"


def upload(local: Path, target: ObjectPath) -> None:
    """Store `local` as the object `target` in one PUT (s3fs switches to a multipart upload for
    big files; S3 makes that object visible only when it completes, so it is atomic as well)."""
    target.fs.put_file(str(local), target.key)


def settled(path: StoragePath, min_age_s: float) -> bool:
    """Whether no writer on another machine can still be committing around `path`. Local
    per-item locks already say so for a local tree; an object store is shared by machines whose
    locks this one cannot see, so an object counts as settled only once it is `min_age_s` old."""
    if isinstance(path, ObjectPath):
        try:
            return path.age_s() > min_age_s
        except FileNotFoundError:
            return False
    return True


def register(con: duckdb.DuckDBPyConnection, root: StoragePath) -> None:
    """Let DuckDB read the tree: an object store's fsspec filesystem is registered on `con`."""
    if isinstance(root, ObjectPath):
        con.register_filesystem(root.fs)
