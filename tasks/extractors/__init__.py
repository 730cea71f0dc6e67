"""Extractors behind one interface (`tasks.extractors.base.Extractor`), chosen by name."""

from __future__ import annotations

import importlib

from tasks.errors import SetupError
from tasks.extractors.base import Extractor

# name -> (module, class); imported lazily so a missing optional library fails only when used.
REGISTRY = {
    "mediapipe": ("tasks.extractors.mediapipe", "MediaPipeExtractor"),
    "openface-csv": ("tasks.extractors.openface_csv", "OpenFaceCsvExtractor"),
}
CHOICES = ("auto", *REGISTRY)
# What each extractor reads, known without importing it.
KINDS = {"mediapipe": ("video", "image"), "openface-csv": ("csv",)}
ALL_KINDS = ("video", "image", "csv")


def kinds_for(name: str) -> tuple[str, ...]:
    return ALL_KINDS if name == "auto" else KINDS[name]


def get_extractor(name: str, **options) -> Extractor:
    if name not in REGISTRY:
        raise SetupError(f"unknown extractor {name!r}; choose one of: {', '.join(CHOICES)}")
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(module), cls)(**options)


def resolve_auto(name: str, media_kinds: set[str]) -> str:
    """`auto`: OpenFace CSV import for a source of CSVs only, else MediaPipe (py-feat's detector
    takes over here once its weights are installed)."""
    if name != "auto":
        return name
    return "openface-csv" if media_kinds == {"csv"} else "mediapipe"
