"""Self-contained checkpoints and prediction from them.

A checkpoint file holds the weights, the model config, the preprocessing (feature columns and
normalisation statistics, window length), the label map, the contract version, the split id and
the test metrics. `load_checkpoint` + `predict_frames` need nothing else.

Format 2 adds `members`: the number of models of an ensemble (whose outputs are averaged), or
null for one model, which is stored exactly as in format 1 (still read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from data_contracts import CONTRACT_VERSION
from models.multitask import EnsembleModel, ModelConfig, MultiTaskModel
from tasks.features import Preprocessing, Windows, make_windows

FORMAT = "affectflow-checkpoint/2"
READABLE = ("affectflow-checkpoint/1", FORMAT)


@dataclass
class Predictor:
    model: MultiTaskModel | EnsembleModel
    prep: Preprocessing
    emotions: list[str]
    meta: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def save_checkpoint(path: Path, model: MultiTaskModel | EnsembleModel, prep: Preprocessing, emotions: list[str],
                    split_id: str, metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write atomically (temporary file + rename) so a kill never leaves half a checkpoint."""
    payload = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": model.config.to_dict(),
        "members": len(model.members) if isinstance(model, EnsembleModel) else None,
        "preprocessing": prep.to_dict(),
        "emotions": list(emotions),
        "contract_version": CONTRACT_VERSION,
        "split_id": split_id,
        "metrics": metrics or {},
        "extra": extra or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: Path, device: str = "cpu") -> Predictor:
    payload = torch.load(Path(path), map_location=device, weights_only=True)
    if payload.get("format") not in READABLE:
        raise ValueError(f"{path} is not an affectflow checkpoint (format {payload.get('format')!r})")
    config = ModelConfig.from_dict(payload["model_config"])
    members = payload.get("members")
    model: MultiTaskModel | EnsembleModel = EnsembleModel(config, members) if members else MultiTaskModel(config)
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    meta = {k: payload[k] for k in ("contract_version", "split_id", "metrics", "extra")}
    return Predictor(model, Preprocessing.from_dict(payload["preprocessing"]), payload["emotions"], meta)


@torch.no_grad()
def predict_windows(model: MultiTaskModel | EnsembleModel, windows: Windows, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Raw outputs per window: emotion probabilities, stress probability, valence/arousal."""
    device = next(model.parameters()).device
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(windows.x), batch_size):
        x = torch.from_numpy(windows.x[start:start + batch_size]).to(device)
        mask = torch.from_numpy(windows.mask[start:start + batch_size]).to(device)
        out = model(x, mask)
        if "emotion" in out:
            chunks.setdefault("emotion", []).append(torch.softmax(out["emotion"], -1).cpu().numpy())
        if "stress" in out:
            chunks.setdefault("stress", []).append(torch.sigmoid(out["stress"]).reshape(-1).cpu().numpy())
        if "valence_arousal" in out:
            chunks.setdefault("valence_arousal", []).append(out["valence_arousal"].cpu().numpy())
    return {k: np.concatenate(v) for k, v in chunks.items()}


def aggregate_units(outputs: dict[str, np.ndarray], unit: np.ndarray, n_units: int) -> dict[str, np.ndarray]:
    """Average window outputs per unit, weighting every window equally; each output keeps its
    shape (a one-class emotion output stays 2-D, so `argmax(1)` always works)."""
    counts = np.bincount(unit, minlength=n_units).astype(np.float64)
    result = {}
    for key, raw in outputs.items():
        values = raw.reshape(len(raw), -1).astype(np.float64)
        total = np.zeros((n_units, values.shape[1]))
        np.add.at(total, unit, values)
        mean = total / np.maximum(counts, 1)[:, None]
        result[key] = mean[:, 0] if raw.ndim == 1 else mean
    return result


def predict_units(predictor: Predictor, frames: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-unit outputs for raw frame arrays (columns `predictor.prep.columns`, time order)."""
    windows = make_windows(frames, predictor.prep)
    return aggregate_units(predict_windows(predictor.model, windows), windows.unit, len(frames))


def predict_frames(predictor: Predictor, frames: pd.DataFrame, unit_column: str = "video_id") -> pd.DataFrame:
    """Predictions per unit from a frames table (one row per frame; needs the checkpoint's
    feature columns, `frame` for time order, and `unit_column`)."""
    missing = [c for c in [unit_column, *predictor.prep.columns] if c not in frames.columns]
    if missing:
        raise ValueError(f"frames lack {len(missing)} columns the model needs, e.g. {missing[:5]}")
    order = [unit_column] + [c for c in ("face_id", "frame") if c in frames.columns]
    ordered = frames.sort_values(order, kind="stable")
    groups = list(ordered.groupby(unit_column, sort=True))
    arrays = [g[predictor.prep.columns].to_numpy(np.float32, na_value=np.nan) for _, g in groups]
    outputs = predict_units(predictor, arrays)
    table = pd.DataFrame({unit_column: [u for u, _ in groups]})
    if "emotion" in outputs:
        probs = outputs["emotion"]
        table["emotion"] = [predictor.emotions[i] for i in probs.argmax(1)]
        table["emotion_confidence"] = probs.max(1)
    if "stress" in outputs:
        table["stress_probability"] = outputs["stress"]
        table["stress"] = (outputs["stress"] >= 0.5).astype(int)
    if "valence_arousal" in outputs:
        table["valence"], table["arousal"] = outputs["valence_arousal"][:, 0], outputs["valence_arousal"][:, 1]
    return table
