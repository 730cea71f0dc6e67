"""Where each table's Parquet files live: under $AFFECTFLOW_HOME, or at $AFFECTFLOW_WAREHOUSE_URL."""

from __future__ import annotations

import os
import re
from pathlib import Path

from data_contracts.columns import Table
from data_contracts.registry import all_tables
from warehouse.storage import StoragePath, read_schema, storage_root, writing

SEED_FILE = "_schema.parquet"
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.=-]{1,200}$")


class Warehouse:
    """The Parquet tree: `<home>/parquet/<table>/<key>.parquet`, plus one empty, schema-only
    seed file per table so that views over an empty table still have their columns.

    `url` puts the tree elsewhere, e.g. an object store (`warehouse.storage`); None reads
    $AFFECTFLOW_WAREHOUSE_URL, and when that is unset (or `url` is "") the tree is `<home>/parquet`.
    Locks, the path index and the DuckDB catalog stay under `home` on this machine."""

    def __init__(self, home: Path, url: str | None = None):
        self.home = Path(home)
        if url is None:
            from affectflow.settings import load_settings

            url = load_settings().warehouse_url
        self.root: StoragePath = storage_root(self.home, url)
        self.tables: dict[str, Table] = all_tables()

    @property
    def catalog_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    def table(self, name: str) -> Table:
        try:
            return self.tables[name]
        except KeyError:
            raise KeyError(f"no table {name!r} in the contract; tables: {', '.join(self.tables)}") from None

    def table_dir(self, name: str) -> StoragePath:
        return self.root / self.table(name).name

    def file_for(self, name: str, key: str) -> StoragePath:
        if not _SAFE_KEY.match(key) or key.startswith("_"):
            raise ValueError(f"unsafe file key {key!r} for table {name}")
        return self.table_dir(name) / f"{key}.parquet"

    def glob(self, name: str) -> str:
        return str(self.table_dir(name) / "*.parquet")

    def files(self, name: str) -> list[StoragePath]:
        return sorted(p for p in self.table_dir(name).glob("*.parquet") if p.name != SEED_FILE)

    def init(self) -> Warehouse:
        """Create the tree and (re)write each table's schema seed when the contract changed."""
        with writing(self.home):
            self.home.mkdir(parents=True, exist_ok=True)  # the catalog, locks and index stay here
            _probe(self.home)
        for table in self.tables.values():
            directory = self.table_dir(table.name)
            with writing(directory):
                directory.mkdir(parents=True, exist_ok=True)
            seed = directory / SEED_FILE
            fingerprint = table.fingerprint()
            if seed.exists():
                meta = read_schema(seed).metadata or {}
                if meta.get(b"affectflow.fingerprint", b"").decode() == fingerprint:
                    continue
            from warehouse.writer import write_atomic

            schema = table.arrow_schema().with_metadata(
                {"affectflow.table": table.name, "affectflow.fingerprint": fingerprint}
            )
            write_atomic(seed, schema.empty_table())
        return self


def _probe(home: Path) -> None:
    """Fail now, with the path, when `home` cannot be written (a read-only mount, no rights)."""
    probe = home / f".write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
