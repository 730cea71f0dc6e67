"""Labels for media items: from a CSV manifest, folder names, file names, or RAVDESS codes.

Precedence per item: manifest row (values given there win), then the nearest folder under the
source root named after an emotion (`<root>/<Emotion>/…`), then the file name itself
(`anger.csv`), then the RAVDESS naming scheme. Stress and valence/arousal default from the
emotion through the emotion map; unlabelled media is allowed.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from data_contracts import EmotionMap

RAVDESS = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
RAVDESS_EMOTIONS = {1: "neutral", 2: "calm", 3: "happy", 4: "sad", 5: "angry", 6: "fear",
                    7: "disgust", 8: "surprise"}
MANIFEST_COLUMNS = ("path", "emotion", "subject_id", "valence", "arousal", "stress")


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


def _number(value: str, cast, what: str, line: int):
    try:
        return cast(value) if value.strip() else None
    except ValueError:
        raise ValueError(f"line {line}: {what} {value!r} is not a number") from None


def read_manifest(path: Path, emotions: EmotionMap) -> Manifest:
    """Parse a manifest CSV. Rows with a missing file or unknown emotion become problems."""
    manifest = Manifest()
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        if "path" not in header:
            raise ValueError(f"manifest {path} has no 'path' column (columns: {', '.join(MANIFEST_COLUMNS)})")
        for line, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
            target = (path.parent / row["path"]).absolute()
            if not target.exists():
                manifest.problems.append((target, f"manifest {path.name} line {line}: file not found"))
                continue
            emotion = None
            if row.get("emotion"):
                emotion = emotions.canonical(row["emotion"])
                if emotion is None:
                    manifest.problems.append((target, f"manifest {path.name} line {line}: unknown emotion "
                                              f"{row['emotion']!r} (known: {', '.join(emotions.emotions)})"))
                    continue
            stress = _number(row.get("stress", ""), int, "stress", line)
            manifest.rows[target] = Label(
                emotion, stress, _number(row.get("valence", ""), float, "valence", line),
                _number(row.get("arousal", ""), float, "arousal", line),
                row.get("subject_id") or None, "manifest")
    return manifest


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
    if manifest is not None and path in manifest.rows:
        return with_defaults(manifest.rows[path], emotions)
    return with_defaults(_from_path(path, root, emotions), emotions)
