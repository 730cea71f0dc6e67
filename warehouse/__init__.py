"""Everything that touches Parquet and DuckDB: layout, atomic writers, the catalog, queries.

Design (see README "Warehouse"): Parquet files are the source of truth, one file per item and
table, each written to a temporary name and renamed into place, so a reader sees a whole item or
none of it. DuckDB reads them through views, and `frames` through a native-table snapshot that
each writing flow publishes as a new file when it ends (`warehouse.snapshot`). Flows never hold a
DuckDB write lock on a file a reader opens, so queries never meet a lock error.
"""

from warehouse.layout import Warehouse

__all__ = ["Warehouse"]
