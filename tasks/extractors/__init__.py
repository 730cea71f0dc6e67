"""Extractors behind one interface (`tasks.extractors.base.Extractor`), chosen by name."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.errors import SetupError

if TYPE_CHECKING:  # the base module imports numpy and pyarrow; `check_ready` runs before they are needed
    from tasks.extractors.base import Extractor

# name -> (module, class); imported lazily so a missing optional library fails only when used.
REGISTRY = {
    "mediapipe": ("tasks.extractors.mediapipe", "MediaPipeExtractor"),
    "openface-csv": ("tasks.extractors.openface_csv", "OpenFaceCsvExtractor"),
    "openface": ("tasks.extractors.openface", "OpenFaceExtractor"),
    "pyfeat": ("tasks.extractors.pyfeat", "PyFeatExtractor"),
}
CHOICES = ("auto", *REGISTRY)
# What each extractor reads, known without importing it.
KINDS = {"mediapipe": ("video", "image"), "openface-csv": ("csv",), "openface": ("video", "image"),
         "pyfeat": ("video", "image")}
ALL_KINDS = ("video", "image", "csv")


def kinds_for(name: str) -> tuple[str, ...]:
    return ALL_KINDS if name == "auto" else KINDS[name]


def get_extractor(name: str, **options) -> Extractor:
    if name not in REGISTRY:
        raise SetupError(f"unknown extractor {name!r}; choose one of: {', '.join(CHOICES)}")
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(module), cls)(**options)


def resolve_auto(name: str, media_kinds: set[str], models_dir: Path) -> str:
    """`auto`: OpenFace CSV import for a source of CSVs only; else py-feat when its weights are
    in the models directory (the richest feature set), else MediaPipe (weights ship with us)."""
    if name != "auto":
        return name
    if media_kinds == {"csv"}:
        return "openface-csv"
    from tasks.pyfeat_weights import weights_present

    return "pyfeat" if weights_present(models_dir) else "mediapipe"


def check_ready(name: str, models_dir: Path, offline: bool, options: dict | None = None) -> None:
    """`SetupError` now, before any work, when extractor `name` cannot run (its model file
    missing offline, OpenFace's binary not found, py-feat's weights not pulled). MediaPipe and
    OpenFace are checked without importing their libraries (this runs before a flow starts)."""
    if name == "mediapipe":
        from tasks.model_files import ensure_model_file

        ensure_model_file("mediapipe-face-landmarker", models_dir, offline)
    elif name == "openface":
        from affectflow.settings import load_settings
        from tasks.extractors.openface_binary import find_binary

        find_binary(load_settings().openface_bin)
    elif name != "openface-csv":
        get_extractor(name, **(options or {})).check_ready()
