"""Labels for media items: from a CSV manifest, folder names, file names, or RAVDESS codes.

Precedence per item: manifest row (values given there win), then the nearest folder under the
source root named after an emotion (`<root>/<Emotion>/…`), then the file name itself
(`anger.csv`), then the RAVDESS naming scheme. Stress and valence/arousal default from the
emotion through the emotion map; unlabelled media is allowed.

A manifest row is refused, with its line number, when its path leaves the manifest's folder and
the source (`../../etc/hostname`, `/etc/os-release`), names no file, gives an unknown emotion or a
value its `labels` column's declaration refuses (the ranges come from the contract), or
contradicts an earlier row for the same file; refused rows never label anything. A manifest that
is not a readable text CSV (binary, a folder, a FIFO) stops the run with one line naming it.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from data_contracts import LABELS, EmotionMap

RAVDESS = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
RAVDESS_EMOTIONS = {1: "neutral", 2: "calm", 3: "happy", 4: "sad", 5: "angry", 6: "fear",
                    7: "disgust", 8: "surprise"}
MANIFEST_COLUMNS = ("path", "emotion", "subject_id", "valence", "arousal", "stress")
NUMBERS = ("stress", "valence", "arousal")  # their rules: the `labels` table's declarations
MAX_MANIFEST_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Label:
    emotion: str | None = None
    stress: int | None = None
    valence: float | None = None
    arousal: float | None = None
    subject_id: str | None = None
    source: str = "none"


@dataclass
class Manifest:
    rows: dict[Path, Label] = field(default_factory=dict)
    problems: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason)


class RowProblem(ValueError):
    """Why one manifest row is refused (its message, without the line)."""


def normalized(path: Path) -> Path:
    """`path` made absolute with `..` and `.` folded away (no symlinks resolved, like discovery)."""
    return Path(os.path.normpath(path.absolute()))


def _inside(target: Path, roots: list[Path]) -> bool:
    return any(target == root or root in target.parents for root in roots)


def _number(row: dict[str, str], name: str) -> float | int | None:
    """The value of label column `name`, checked against its declaration in the contract."""
    text = row.get(name, "")
    if not text:
        return None
    column = LABELS.by_name[name]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise RowProblem(f"{name} {text!r} is not a number")
    found = column.violation([value])
    if found is not None:
        raise RowProblem(f"{name} {text} {found[1]}" + ("" if column.allowed else f" (must be {column.rule})"))
    return int(value) if column.is_integer else value


def _row_label(row: dict[str, str], emotions: EmotionMap) -> Label:
    emotion = None
    if row.get("emotion"):
        emotion = emotions.canonical(row["emotion"])
        if emotion is None:
            raise RowProblem(f"unknown emotion {row['emotion']!r} (known: {', '.join(emotions.emotions)})")
    stress, valence, arousal = (_number(row, name) for name in NUMBERS)
    return Label(emotion, stress, valence, arousal, row.get("subject_id") or None, "manifest")  # type: ignore[arg-type]


def _row_target(row: dict[str, str], folder: Path, roots: list[Path]) -> Path:
    if not row.get("path"):
        raise RowProblem("empty path")
    target = normalized(folder / row["path"])
    if not _inside(target, roots):
        raise RowProblem(f"path {row['path']!r} is outside the manifest's folder and the source; refused")
    return target


def _differences(a: Label, b: Label) -> str:
    return ", ".join(f"{f.name} {getattr(a, f.name)!r} vs {getattr(b, f.name)!r}"
                     for f in fields(Label) if getattr(a, f.name) != getattr(b, f.name))


def read_manifest(path: Path, emotions: EmotionMap, source_root: Path | None = None) -> Manifest:
    """Parse a manifest CSV: its rows' labels, and its refused rows as problems (see the module
    docstring). Paths are relative to the manifest's folder; they must stay inside it or inside
    `source_root` (the folder or file being built)."""
    manifest = Manifest()
    roots = [normalized(path.parent)] + ([normalized(source_root)] if source_root is not None else [])
    first: dict[Path, tuple[int, Label]] = {}
    refused: set[Path] = set()
    for line, row in _manifest_rows(path):
        where = f"manifest {path.name} line {line}"
        try:
            target = _row_target(row, path.parent, roots)
        except RowProblem as exc:  # named by the path it gives (or by the manifest, when empty)
            manifest.problems.append((normalized(path.parent / row["path"]) if row.get("path") else path,
                                      f"{where}: {exc}"))
            continue
        try:
            if not target.exists():
                raise RowProblem("file not found")
            label = _row_label(row, emotions)
            if target in first and first[target][1] != label:
                raise RowProblem(f"labels for {row['path']!r} conflict with line {first[target][0]} "
                                 f"({_differences(first[target][1], label)})")
        except RowProblem as exc:
            manifest.problems.append((target, f"{where}: {exc}"))
            refused.add(target)
            continue
        first.setdefault(target, (line, label))
    manifest.rows = {target: label for target, (_, label) in first.items() if target not in refused}
    return manifest


def _manifest_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row with stripped keys and values) of each data row of the manifest."""
    reader = csv.DictReader(io.StringIO(_manifest_text(path), newline=""))
    _check_header(path, reader)
    try:
        for raw in reader:
            yield reader.line_num, {k.strip(): (v or "").strip() for k, v in raw.items() if isinstance(k, str)}
    except csv.Error as exc:
        raise ValueError(f"manifest {path}: not a CSV file ({exc}, line {reader.line_num})") from None


def check_manifest(path: Path) -> None:
    """`ValueError` (one line) unless `path` is a readable manifest with a `path` column: what a
    command checks before a run starts."""
    _check_header(path, csv.DictReader(io.StringIO(_manifest_text(path), newline="")))


def _check_header(path: Path, reader: csv.DictReader) -> None:
    try:
        header = [h.strip() for h in reader.fieldnames or []]
    except csv.Error as exc:
        raise ValueError(f"manifest {path}: not a CSV file ({exc})") from None
    if "path" not in header:
        found = ", ".join(repr(h) for h in header) if header else "none (the file is empty)"
        raise ValueError(f"manifest {path} has no 'path' column: its columns are {found}; expected 'path' "
                         f"and any of {', '.join(MANIFEST_COLUMNS[1:])}")


def _manifest_text(path: Path) -> str:
    """The manifest's text; one line naming the manifest when it is no readable text CSV."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ValueError(f"manifest {path} is a folder, not a CSV file")
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"manifest {path} is not a regular file")
        if info.st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"manifest {path} is {info.st_size:,} bytes: too large for a labels CSV")
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"manifest {path} not found") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"manifest {path} is not a text CSV (byte {exc.start} is not UTF-8)") from None
    except OSError as exc:
        raise ValueError(f"manifest {path}: cannot read it ({exc.strerror or exc})") from None
    if "\0" in text:
        raise ValueError(f"manifest {path} is not a text CSV (it holds NUL bytes)")
    return text


def _from_path(path: Path, root: Path | None, emotions: EmotionMap) -> Label:
    if root is not None:
        try:
            parents = path.relative_to(root).parent.parts
        except ValueError:
            parents = ()
        for part in reversed(parents):
            found = emotions.canonical(part)
            if found:
                return Label(found, source="folder")
    found = emotions.canonical(path.stem)
    if found:
        return Label(found, source="filename")
    code = RAVDESS.match(path.stem)
    if code and int(code.group(3)) in RAVDESS_EMOTIONS:
        return Label(RAVDESS_EMOTIONS[int(code.group(3))], subject_id=f"ravdess-{code.group(7)}",
                     source="ravdess")
    return Label()


def with_defaults(label: Label, emotions: EmotionMap) -> Label:
    """Fill stress / valence / arousal from the emotion map where not given."""
    if label.emotion is None or label.emotion not in emotions.affects:
        return label
    d = emotions.defaults(label.emotion)
    return replace(
        label,
        stress=label.stress if label.stress is not None else d.stress,
        valence=label.valence if label.valence is not None else d.valence,
        arousal=label.arousal if label.arousal is not None else d.arousal,
    )


def resolve_label(path: Path, root: Path | None, emotions: EmotionMap, manifest: Manifest | None) -> Label:
    if manifest is not None and normalized(path) in manifest.rows:
        return with_defaults(manifest.rows[normalized(path)], emotions)
    return with_defaults(_from_path(path, root, emotions), emotions)
