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

import errno
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:  # fsspec loads only for an object-store URL, pyarrow only to read or write a
    import fsspec  # file: `affectflow query` reads through DuckDB alone
    import pyarrow as pa
    import pyarrow.parquet as pq

NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


class StorageError(OSError):
    """The warehouse cannot be written (disk full, read-only, no permission): nothing more can be
    loaded, so the run stops. The message names the path and the reason in one line."""

    def __str__(self) -> str:
        return str(self.strerror)


@contextmanager
def writing(path: object) -> Iterator[None]:
    """Turn a write failing for lack of room or rights into a `StorageError` naming `path`."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        if exc.errno not in NO_ROOM:
            raise
        raise StorageError(exc.errno, f"cannot write to {path}: {exc.strerror or exc}") from exc


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
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    try:
        # no listings cache: other machines add objects, and a cached listing would hide them
        fs, root = fsspec.core.url_to_fs(url, use_listings_cache=False)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"AFFECTFLOW_WAREHOUSE_URL={url!r}: {exc}") from None
    if isinstance(fs, LocalFileSystem):
        return Path(root)
    return ObjectPath(fs, root)


def read_table(path: StoragePath, columns: list[str] | None = None) -> pa.Table:
    import pyarrow.parquet as pq

    if isinstance(path, ObjectPath):
        with path.fs.open(path.key, "rb") as fh:
            return pq.read_table(fh, columns=columns)
    return pq.read_table(path, columns=columns)


def read_columns(path: StoragePath, wanted: list[str]) -> pa.Table:
    """The `wanted` columns the file has (files written before a column existed lack it), with
    one open of the file."""
    import pyarrow.parquet as pq

    if isinstance(path, ObjectPath):
        with path.fs.open(path.key, "rb") as fh:
            return _present_columns(pq.ParquetFile(fh), wanted)
    return _present_columns(pq.ParquetFile(path), wanted)


def _present_columns(parquet: pq.ParquetFile, wanted: list[str]) -> pa.Table:
    names = set(parquet.schema_arrow.names)
    return parquet.read(columns=[c for c in wanted if c in names])


def read_schema(path: StoragePath) -> pa.Schema:
    import pyarrow.parquet as pq

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


@dataclass(frozen=True)
class FileState:
    """A Parquet file's identity: size, time, and a tag every write changes (the inode locally,
    where each write renames a new file into place; the ETag, or generation, of an object)."""

    size: int
    mtime_ns: int
    tag: str


def data_file(name: str) -> bool:
    """A table's data file: `*.parquet`, not a hidden temporary file nor the `_schema` seed."""
    return name.endswith(".parquet") and not name.startswith((".", "_"))


def list_files(directory: StoragePath) -> dict[str, FileState]:
    """A table folder's data files and their states: one `scandir` locally, one listing request
    on an object store."""
    if isinstance(directory, ObjectPath):
        return _object_listing(directory)
    out = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if data_file(entry.name):
                    st = entry.stat()
                    out[entry.name] = FileState(st.st_size, st.st_mtime_ns, str(st.st_ino))
    except FileNotFoundError:
        return {}
    return out


def _object_listing(directory: ObjectPath) -> dict[str, FileState]:
    """Each object's size, time and ETag (s3fs; `generation`/`etag` on other stores, the time
    alone where a store offers nothing else)."""
    try:
        entries = directory.fs.ls(directory.key, detail=True)
    except FileNotFoundError:
        return {}
    out = {}
    for info in entries:
        name = PurePosixPath(info["name"]).name
        if info.get("type") == "directory" or not data_file(name):
            continue
        when = next((info[k] for k in ("LastModified", "mtime", "updated", "created") if info.get(k)), None)
        if isinstance(when, str):
            when = datetime.fromisoformat(when.replace("Z", "+00:00"))
        mtime_ns = int(when.timestamp() * 1e9) if isinstance(when, datetime) else int(float(when or 0) * 1e9)
        tag = next((str(info[k]) for k in ("ETag", "etag", "generation", "md5Hash") if info.get(k)), "")
        out[name] = FileState(int(info.get("size") or 0), mtime_ns, tag)
    return out
