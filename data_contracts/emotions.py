"""The emotion vocabulary: canonical names, aliases, and the stress / valence-arousal defaults.

The defaults are the research table: Angry and Sad are stressful (1), Happy and Neutral are not
(0); valence/arousal Happy 2.0/2.0, Sad 1.0/1.0, Angry 1.0/2.0, Neutral 1.5/1.5. Emotions the
table does not cover get null stress and valence/arousal unless a manifest gives them.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

DEFAULT_MAP = Path(__file__).with_name("emotions.csv")


@dataclass(frozen=True)
class Affect:
    emotion: str
    stress: int | None
    valence: float | None
    arousal: float | None


def _norm(word: str) -> str:
    return re.sub(r"[^a-z]", "", word.lower())


@dataclass(frozen=True)
class EmotionMap:
    affects: dict[str, Affect]
    aliases: dict[str, str]

    @property
    def emotions(self) -> list[str]:
        return list(self.affects)

    def canonical(self, word: str) -> str | None:
        """The canonical emotion for a word (any case, any alias), or None."""
        return self.aliases.get(_norm(word))

    def require(self, word: str) -> str:
        found = self.canonical(word)
        if found is None:
            raise ValueError(
                f"unknown emotion {word!r}; known: {', '.join(self.emotions)} "
                "(aliases in the emotion map file)"
            )
        return found

    def defaults(self, emotion: str) -> Affect:
        return self.affects[emotion]


T = TypeVar("T")


def _opt(value: str, cast: Callable[[str], T]) -> T | None:
    value = value.strip()
    return cast(value) if value else None


def load_emotion_map(path: Path | None = None) -> EmotionMap:
    """Read an emotion map CSV (columns emotion, aliases, stress, valence, arousal)."""
    path = path or DEFAULT_MAP
    affects: dict[str, Affect] = {}
    aliases: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"emotion", "aliases", "stress", "valence", "arousal"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: emotion map lacks columns {sorted(missing)}")
        for row in reader:
            name = _norm(row["emotion"])
            affects[name] = Affect(
                name, _opt(row["stress"], int), _opt(row["valence"], float), _opt(row["arousal"], float)
            )
            for alias in [name, *row["aliases"].split("|")]:
                if alias.strip():
                    aliases[_norm(alias)] = name
    return EmotionMap(affects, aliases)
