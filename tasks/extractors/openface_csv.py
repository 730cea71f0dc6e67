"""Import OpenFace 2.x FeatureExtraction CSVs (the research pipeline starts from these).

OpenFace writes headers with leading spaces (`" confidence"`), 1-based frame numbers, and keeps
writing landmark/AU values on frames where tracking failed. This importer strips the headers,
makes frames 0-based, maps every known column into the contract, and nulls every feature on
rows with `success` 0 or `confidence` below the threshold (those rows get `success` 0 too).

A CSV whose timestamps are all 0 holds still images (FaceLandmarkImg, or FeatureExtraction over
an image folder): each row becomes its own item (`video_id` per row). Otherwise it is one video.

The key columns are checked against the contract before they are cast, so nothing wraps or
truncates: `frame`, `face_id` and `success` must be integers their declared dtype and rule hold
(`Column.violation`), and no two rows may share the table's key (video_id, frame, face_id)
(`UniqueKey`); each refusal names the CSV line. A UTF-8 byte-order mark is read, not taken for
part of the first column's name.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from data_contracts import FRAMES, UniqueKey
from data_contracts.tables import OPENFACE, openface_name
from tasks.errors import ItemError
from tasks.extractors.base import ExtractOptions, Extractor, ItemMeta, frames_batch
from tasks.media import MediaItem

REQUIRED = ("frame", "face_id", "timestamp", "confidence", "success")
FEATURES = [c.name for c in FRAMES.columns if c.feature and OPENFACE in c.extractors]
KNOWN = set(REQUIRED) | set(FEATURES)
INTEGER_KEYS = [c for c in FRAMES.columns if c.name in REQUIRED and c.is_integer]  # frame, face_id, success
CHUNK_ROWS = 4096  # rows per chunk when a file is read as text (to name a bad value)
BLOCK_BYTES = 16 << 20  # bytes of CSV per parsed block: ~2,500 rows of OpenFace's 700 columns
ENCODING = "utf-8-sig"  # reads a byte-order mark (Excel, PowerShell) as such


def _header(item: MediaItem) -> list[str]:
    try:
        with open(item.path, encoding=ENCODING, errors="strict") as fh:
            first = fh.readline()
    except UnicodeDecodeError:
        raise ItemError("extract", "not a text CSV (bytes that are not UTF-8)") from None
    except OSError as exc:
        raise ItemError("extract", f"cannot read file: {exc.strerror or exc}") from None
    columns = [openface_name(c.strip()) for c in first.strip().split(",")]
    if not first.strip():
        raise ItemError("extract", "empty CSV (no header line)")
    return columns


def check_columns(columns: list[str]) -> list[str]:
    """The feature columns this CSV has; `ItemError` for missing keys or unknown/renamed columns."""
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ItemError("extract", f"not an OpenFace CSV: missing required columns {missing}")
    dupes = sorted(c for c, n in Counter(columns).items() if n > 1)
    if dupes:
        raise ItemError("extract", f"duplicate columns {dupes[:5]}")
    unknown = [c for c in columns if c not in KNOWN]
    if unknown:
        raise ItemError("extract", f"columns not in OpenFace 2.x output (renamed?): {unknown[:6]}"
                        + (f" and {len(unknown) - 6} more" if len(unknown) > 6 else ""))
    given = set(columns)
    present = [c for c in FEATURES if c in given]
    if not present:
        raise ItemError("extract", "OpenFace CSV has no feature columns")
    return present


def _complete(chunk: pd.DataFrame, where: int) -> pd.DataFrame:
    missing = chunk.isna()
    if missing.any().any():
        column = missing.any().idxmax()
        line = int(missing[column].values.argmax()) + where + 2
        raise ItemError("extract", f"missing value (empty or NaN) in column {column!r} at line {line}")
    return chunk


def _numeric(chunk: pd.DataFrame, where: int) -> pd.DataFrame:
    _complete(chunk, where)
    out = chunk.apply(pd.to_numeric, errors="coerce")
    bad = out.isna() & chunk.notna()
    if bad.any().any():
        column = bad.any().idxmax()
        row = int(bad[column].values.argmax()) + where + 2  # 1-based line number, after header
        raise ItemError("extract", f"non-numeric value {chunk[column].iloc[row - where - 2]!r} "
                        f"in column {column!r} at line {row}")
    return out


def _video_ids(source_id: str, frames: np.ndarray, per_row: bool) -> list[str]:
    if not per_row:
        return [source_id] * len(frames)
    return [hashlib.sha256(f"{source_id}:{f}".encode()).hexdigest()[:20] for f in frames]


class OpenFaceCsvExtractor(Extractor):
    name = OPENFACE
    kinds = ("csv",)

    @property
    def version(self) -> str:
        return "openface-2.x-csv/1"

    def extract(self, item: MediaItem, source_id: str, options: ExtractOptions,
                meta: ItemMeta) -> Iterator[pa.RecordBatch]:
        columns = _header(item)
        present = check_columns(columns)
        stamps = _timestamps(item, columns)
        if not len(stamps):
            raise ItemError("extract", "OpenFace CSV has a header but no rows")
        per_row = len(stamps) > 1 and bool((stamps == 0).all())
        meta.kind = "openface-image" if per_row else "openface-video"
        meta.extra["rows"] = len(stamps)
        yield from self._chunks(item, source_id, options, columns, present, per_row)

    def _chunks(self, item: MediaItem, source_id: str, options: ExtractOptions, columns: list[str],
                present: list[str], per_row: bool) -> Iterator[pa.RecordBatch]:
        """Record batches of the CSV's rows. Arrow's CSV reader parses the numbers (in C++, on
        every core: ~10x pandas for OpenFace's 700 columns); a file that fails there or in a check
        is read again as text by pandas, whose complaint names the line, the column and the
        value as written. That second reading yields only the rows not yielded yet."""
        done = 0
        try:
            for batch in self._batches(_arrow_blocks(item, columns), source_id, options, present, per_row):
                done += batch.num_rows
                yield batch
        except (ItemError, ValueError):  # pyarrow.ArrowInvalid is a ValueError
            yield from self._batches(_text_blocks(item), source_id, options, present, per_row, skip=done)

    def _batches(self, blocks: Iterator[tuple[dict[str, np.ndarray], pd.DataFrame | None]], source_id: str,
                 options: ExtractOptions, present: list[str], per_row: bool, skip: int = 0) -> Iterator[pa.RecordBatch]:
        """Record batches from (values, text) blocks, keys checked across blocks; the first
        `skip` rows are checked but not yielded again."""
        start = 0
        unique = UniqueKey(FRAMES)
        for values, raw in blocks:
            keys = _keys(values, raw, start, source_id, per_row)
            _check_unique(unique, keys, raw, start)
            if start >= skip:
                yield self._batch(values, keys, options, present)
            start += len(values["frame"])

    @staticmethod
    def _batch(values: dict[str, np.ndarray], keys: dict, options: ExtractOptions,
               present: list[str]) -> pa.RecordBatch:
        confidence = values["confidence"].astype(np.float32)
        success = (keys["success"] == 1) & (confidence >= options.min_confidence)
        columns = {**keys, "timestamp": values["timestamp"], "success": success.astype(np.int8),
                   "confidence": confidence}
        return frames_batch(keys["source_id"], columns, {c: values[c] for c in present})


def _arrow_blocks(item: MediaItem, columns: list[str]) -> Iterator[tuple[dict[str, np.ndarray], None]]:
    """The CSV's rows as float64 arrays per column, `BLOCK_BYTES` of the file at a time (memory
    stays bounded on long videos), without their text. A missing value raises ValueError, a
    value that is not a number `pyarrow.ArrowInvalid`: the text reading names either."""
    import pyarrow.csv as pcsv

    reader = pcsv.open_csv(item.path, read_options=pcsv.ReadOptions(column_names=columns, skip_rows=1,
                                                                    block_size=BLOCK_BYTES),
                           convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(columns, pa.float64())))
    for block in reader:
        values = {name: block.column(i).to_numpy(zero_copy_only=False) for i, name in enumerate(columns)}
        if any(np.isnan(v).any() for v in values.values()):
            raise ValueError("a missing value")
        yield values, None


def _text_blocks(item: MediaItem) -> Iterator[tuple[dict[str, np.ndarray], pd.DataFrame]]:
    """The CSV read as text by pandas, `CHUNK_ROWS` rows at a time: each chunk's values and its
    text; a value that is missing or not a number is refused with its line and column."""
    start = 0
    reader = pd.read_csv(item.path, skipinitialspace=True, chunksize=CHUNK_ROWS, dtype=str,
                         on_bad_lines="error", encoding=ENCODING)
    try:
        for raw in reader:
            raw.columns = [openface_name(c.strip()) for c in raw.columns]
            chunk = _numeric(raw, start)
            yield {c: chunk[c].to_numpy(dtype=np.float64) for c in chunk.columns}, raw
            start += len(raw)
    except pd.errors.ParserError as exc:
        raise ItemError("extract", f"malformed CSV: {str(exc).splitlines()[0]}") from None


def _timestamps(item: MediaItem, columns: list[str]) -> np.ndarray:
    """Every row's timestamp (NaN where it is not a number): all 0 means still images."""
    import pyarrow.csv as pcsv

    try:
        table = pcsv.read_csv(item.path, read_options=pcsv.ReadOptions(column_names=columns, skip_rows=1),
                              convert_options=pcsv.ConvertOptions(include_columns=["timestamp"],
                                                                  column_types={"timestamp": pa.float64()}))
        return table.column(0).to_numpy()
    except ValueError:  # pyarrow.ArrowInvalid: pandas reads it, and names what it found
        pass
    try:
        stamps = pd.read_csv(item.path, skipinitialspace=True, encoding=ENCODING,
                             usecols=lambda c: c.strip() == "timestamp")
    except (pd.errors.ParserError, ValueError) as exc:
        raise ItemError("extract", f"malformed CSV: {str(exc).splitlines()[0]}") from None
    return pd.to_numeric(stamps.iloc[:, 0], errors="coerce").to_numpy()


def _keys(values: dict[str, np.ndarray], raw: pd.DataFrame | None, where: int, source_id: str,
          per_row: bool) -> dict:
    """The integer key columns in contract terms (0-based frames), each checked against its
    declaration before the cast; the line and the CSV's own value (`raw`, the text) name any
    that fails (without the text: a ValueError, and the text reading names it)."""
    out: dict = {"source_id": source_id}
    for column in INTEGER_KEYS:
        keys = values[column.name] - (1 if column.name == "frame" else 0)
        found = column.violation(keys)
        if found is not None:
            row, problem = found
            if raw is None:
                raise ValueError(problem)
            raise ItemError("extract", f"line {where + row + 2}: {column.name} {raw[column.name].iloc[row]} {problem}")
        out[column.name] = keys.astype(column.arrow_type.to_pandas_dtype())
    out["video_id"] = _video_ids(source_id, out["frame"], per_row)
    return out


def _check_unique(unique: UniqueKey, keys: dict, raw: pd.DataFrame | None, where: int) -> None:
    lines = range(where + 2, where + 2 + len(keys["frame"]))
    repeat = unique.first_repeat(keys, lines)
    if repeat is not None:
        line, first = repeat
        if raw is None:
            raise ValueError("a repeated key")  # the text reading names it
        row = line - where - 2
        raise ItemError("extract", f"line {line}: frame {raw['frame'].iloc[row]}, face_id {raw['face_id'].iloc[row]} "
                        f"repeats line {first} (the key {', '.join(unique.columns)} must be unique)")
