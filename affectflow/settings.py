"""Every setting affectflow reads from the environment, in one place.

All variables share the prefix `AFFECTFLOW_`, except `OPENFACE_BIN` (OpenFace's own binary, named
as OpenFace users know it). Nothing else in the project reads `os.environ`
for its own configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_DOCS = {
    "AFFECTFLOW_HOME": "warehouse, Parquet, runs, quarantine (default ./.affectflow)",
    "AFFECTFLOW_MODELS_DIR": "model weights (default $AFFECTFLOW_HOME/models)",
    "AFFECTFLOW_EXTRACTOR": "default extractor: auto, mediapipe, openface-csv, openface, pyfeat (default auto)",
    "AFFECTFLOW_EMOTION_MAP": "CSV of emotions, aliases and stress/valence/arousal defaults",
    "AFFECTFLOW_MIN_CONFIDENCE": "OpenFace rows below this confidence are blanked (default 0.7)",
    "AFFECTFLOW_TIMEZONE": "timezone of the nightly re-split schedule (default UTC)",
    "AFFECTFLOW_QUERY_TIMEOUT": "seconds before `affectflow query` gives up (default 300)",
    "AFFECTFLOW_OFFLINE": "1 to never download model weights (default 0)",
    "AFFECTFLOW_WAREHOUSE_URL": "where the Parquet tree lives, e.g. s3://bucket/prefix (default $AFFECTFLOW_HOME/parquet)",
    "AFFECTFLOW_VALIDATION": "where Great Expectations checks batches: worker (a process of its own, beside the "
                             "extraction) or inline (in the extracting process) (default worker)",
    "OPENFACE_BIN": "OpenFace 2.x FeatureExtraction for the `openface` extractor (default: FeatureExtraction on PATH)",
}


@dataclass(frozen=True)
class Settings:
    home: Path
    models_dir: Path
    extractor: str
    emotion_map: Path | None
    min_confidence: float
    timezone: str
    query_timeout_s: float
    offline: bool
    warehouse_url: str | None = None
    openface_bin: str | None = None
    validation: str = "worker"

    @property
    def parquet_dir(self) -> Path:
        return self.home / "parquet"

    @property
    def catalog_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _choice(name: str, allowed: tuple[str, ...]) -> str:
    """One of `allowed` (the first by default)."""
    raw = os.environ.get(name, "").strip().lower() or allowed[0]
    if raw not in allowed:
        raise ValueError(f"{name}={raw!r}: choose one of {', '.join(allowed)}")
    return raw


def load_settings() -> Settings:
    """Read the environment now (tests and the CLI change it between calls)."""
    env = os.environ
    home = Path(env.get("AFFECTFLOW_HOME") or ".affectflow").expanduser().resolve()
    models = env.get("AFFECTFLOW_MODELS_DIR")
    emotion_map = env.get("AFFECTFLOW_EMOTION_MAP")
    return Settings(
        home=home,
        models_dir=Path(models).expanduser().resolve() if models else home / "models",
        extractor=env.get("AFFECTFLOW_EXTRACTOR", "auto").strip() or "auto",
        emotion_map=Path(emotion_map).expanduser().resolve() if emotion_map else None,
        min_confidence=_float("AFFECTFLOW_MIN_CONFIDENCE", 0.7),
        timezone=env.get("AFFECTFLOW_TIMEZONE", "UTC").strip() or "UTC",
        query_timeout_s=_float("AFFECTFLOW_QUERY_TIMEOUT", 300.0),
        offline=env.get("AFFECTFLOW_OFFLINE", "0").strip().lower() in {"1", "true", "yes"},
        warehouse_url=env.get("AFFECTFLOW_WAREHOUSE_URL", "").strip() or None,
        openface_bin=env.get("OPENFACE_BIN", "").strip() or None,
        validation=_choice("AFFECTFLOW_VALIDATION", ("worker", "inline")),
    )
