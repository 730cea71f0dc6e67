"""Run an installed OpenFace 2.x `FeatureExtraction` on each item and import its CSV.

The binary is `$OPENFACE_BIN`, else `FeatureExtraction` on PATH. A video runs as
`FeatureExtraction -f VIDEO -out_dir TMP -of NAME FLAGS`; a still image as `-fdir` on a folder
holding just that image (FeatureExtraction reads image folders as a sequence; one image gives
one row). The CSV it writes goes through the `openface-csv` importer unchanged (header spaces
stripped, frames made 0-based, rows with `success` 0 or low confidence blanked), so a video run
here loads exactly what importing OpenFace's CSV of it would. The flags and the binary's sha256
are in the extractor config, so changing either re-extracts. FeatureExtraction's stdout and
stderr go to the run log, line by line.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from affectflow.settings import load_settings
from data_contracts.tables import OPENFACE_RUN
from tasks.errors import ItemError
from tasks.extractors.base import ExtractOptions, Extractor, ItemMeta
from tasks.extractors.openface_binary import BINARY, find_binary
from tasks.extractors.openface_csv import OpenFaceCsvExtractor
from tasks.media import MediaItem

# The outputs the contract holds: 2D landmarks, pose, Action Units, gaze (the fixtures' flags).
DEFAULT_FLAGS = ("-2Dfp", "-pose", "-aus", "-gaze")
OWN_FLAGS = {"-f", "-fdir", "-out_dir", "-of", "-inroot", "-outroot"}  # set per item by this extractor
log = logging.getLogger(__name__)


@functools.cache
def _sha256(path: Path, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run's logger inside a flow or task run (so lines reach the UI), else ours."""
    try:
        from prefect.logging import get_run_logger

        return get_run_logger()
    except Exception:  # MissingContextError outside a run
        return log


class OpenFaceExtractor(Extractor):
    """OpenFace 2.x FeatureExtraction on videos and still images."""

    name = OPENFACE_RUN
    kinds = ("video", "image")

    def __init__(self, flags: tuple[str, ...] | list[str] = DEFAULT_FLAGS, binary: str | None = None,
                 timeout_s: float = 3600.0):
        clash = sorted(OWN_FLAGS & set(flags))
        if clash:
            raise ValueError(f"OpenFace flags {clash} are set per item by the extractor; leave them out")
        self.flags = tuple(str(f) for f in flags)
        self.configured = binary if binary is not None else load_settings().openface_bin
        self.timeout_s = float(timeout_s)
        self.importer = OpenFaceCsvExtractor()

    @property
    def version(self) -> str:
        return f"openface-2.x-featureextraction/1+{self.importer.version}"

    def binary(self) -> Path:
        return find_binary(self.configured)

    def config(self) -> dict[str, Any]:
        path = self.binary()
        stat = path.stat()
        return {"flags": list(self.flags), "binary_sha256": _sha256(path, stat.st_mtime_ns, stat.st_size)}

    def check_ready(self) -> None:
        self.binary()

    def command(self, item: MediaItem, workdir: Path) -> list[str]:
        """The FeatureExtraction command line for one item (an image is linked into its own folder)."""
        if item.kind == "image":
            folder = workdir / "in"
            folder.mkdir()
            (folder / item.path.name).symlink_to(item.path)
            source = ["-fdir", str(folder)]
        else:
            source = ["-f", str(item.path)]
        return [str(self.binary()), *source, "-out_dir", str(workdir / "out"), "-of", "openface", *self.flags]

    def extract(self, item: MediaItem, source_id: str, options: ExtractOptions,
                meta: ItemMeta) -> Iterator[pa.RecordBatch]:
        with tempfile.TemporaryDirectory(prefix="affectflow-openface-") as tmp:
            csv = self._run(item, Path(tmp))
            kind = meta.kind
            batches = self.importer.extract(MediaItem(csv, "csv"), source_id, options, meta)
            yield from limit_frames(batches, options)
            meta.kind = kind  # the item is the video or image, not a CSV of one
            meta.extra["openface_flags"] = list(self.flags)

    def _run(self, item: MediaItem, workdir: Path) -> Path:
        args = self.command(item, workdir)
        logger = _run_logger()
        logger.info("OpenFace: %s", " ".join(args))
        try:
            done = subprocess.run(args, capture_output=True, text=True, errors="replace",
                                  timeout=self.timeout_s, cwd=workdir)
        except subprocess.TimeoutExpired:
            raise ItemError("extract", f"OpenFace {BINARY} ran past {self.timeout_s:.0f} s and was stopped") from None
        except OSError as exc:
            raise ItemError("extract", f"cannot run OpenFace {BINARY}: {exc.strerror or exc}") from None
        for stream, text in (("stdout", done.stdout), ("stderr", done.stderr)):
            for line in text.splitlines():
                if line.strip():
                    logger.info("FeatureExtraction %s [%s]: %s", stream, item.path.name, line.rstrip())
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise ItemError("extract", f"OpenFace {BINARY} failed (exit {done.returncode}): {last[:200]}")
        return _output_csv(workdir / "out")


def _output_csv(out_dir: Path) -> Path:
    expected = out_dir / "openface.csv"
    if expected.is_file():
        return expected
    found = sorted(out_dir.glob("*.csv")) if out_dir.is_dir() else []
    if len(found) != 1:
        raise ItemError("extract", f"OpenFace {BINARY} exited 0 but wrote no CSV (can it read this file?)")
    return found[0]


def limit_frames(batches: Iterator[pa.RecordBatch], options: ExtractOptions) -> Iterator[pa.RecordBatch]:
    """Keep the rows `fps` and `max_frames` would have kept had we decoded the video ourselves
    (`tasks.media.iter_frames`' rule, on OpenFace's timestamps); OpenFace reads every frame."""
    if options.fps is None and options.max_frames is None:
        yield from batches
        return
    step = 1.0 / options.fps if options.fps else 0.0
    next_keep, kept = 0.0, 0
    for batch in batches:
        mask = np.zeros(batch.num_rows, dtype=bool)
        for i, stamp in enumerate(batch.column("timestamp").to_numpy()):
            if options.max_frames is not None and kept >= options.max_frames:
                break
            if step == 0.0 or stamp + 1e-6 >= next_keep:
                next_keep, kept, mask[i] = next_keep + step, kept + 1, True
        if mask.any():
            yield batch.filter(pa.array(mask))
        if options.max_frames is not None and kept >= options.max_frames:
            return

