"""The four prediction plots from per-frame predictions: written as PNGs with a title, gaps where
no face was found, and a plot left out when the model has no head for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tasks.plots import PLOTS, emotion_colours, plot_all, png_data_url

EMOTIONS = ["angry", "happy", "neutral", "sad"]


def _frames(n: int = 120, no_face: slice = slice(40, 60)) -> pd.DataFrame:
    """Per-frame predictions drifting from sad to happy, with a stretch without a face."""
    t = np.arange(n) / 25
    logits = np.stack([np.zeros(n), np.linspace(-2, 3, n), np.full(n, 0.5), np.linspace(2, -2, n)], 1)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    frames = pd.DataFrame({"video_id": "v", "frame": np.arange(n), "face_id": 0, "timestamp": t, "face": 1})
    for i, emotion in enumerate(EMOTIONS):
        frames[f"p_{emotion}"] = probs[:, i]
    frames["dominant_emotion"] = [EMOTIONS[i] for i in probs.argmax(1)]
    frames["stress_prob"] = np.linspace(0.8, 0.2, n)
    frames["valence"], frames["arousal"] = np.linspace(1.0, 2.0, n), np.linspace(1.0, 2.2, n)
    predicted = [c for c in frames if c.startswith("p_")] + ["dominant_emotion", "stress_prob", "valence", "arousal"]
    frames.loc[frames.index[no_face], predicted] = None
    frames.loc[frames.index[no_face], "face"] = 0
    return frames


def test_four_titled_plots(tmp_path: Path) -> None:
    paths = plot_all(_frames(), EMOTIONS, tmp_path, "clip.mp4 (model m1)")
    assert [p.stem for p in paths] == list(PLOTS)
    titles = {}
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 500 and image.height >= 300
            titles[path.stem] = image.info["Title"]
            pixels = np.asarray(image.convert("L"))
            assert pixels.std() > 10  # something was drawn
    assert titles["timeline"].startswith("Emotion probabilities over time")
    assert titles["distribution"].startswith("Emotion distribution over 100 face frames")
    assert titles["circumplex"].startswith("Valence-arousal trajectory")
    assert titles["stress"].startswith("Stress over time")
    assert all("clip.mp4 (model m1)" in t for t in titles.values())
    assert png_data_url(paths[0]).startswith("data:image/png;base64,iVBOR")


def test_plots_without_a_head_are_left_out(tmp_path: Path) -> None:
    frames = _frames().assign(stress_prob=np.nan, valence=np.nan, arousal=np.nan)
    assert [p.stem for p in plot_all(frames, EMOTIONS, tmp_path, "t")] == ["timeline", "distribution"]
    no_face = _frames(no_face=slice(0, 120))
    assert plot_all(no_face, EMOTIONS, tmp_path / "none", "t") == []


def test_colours_are_fixed_for_known_emotions_and_distinct_for_others() -> None:
    colours = emotion_colours(["angry", "sad", "deboche", "contempt", "zzz"])
    assert colours["angry"] == "#d62728" and colours["sad"] == "#1f77b4"
    assert len({str(c) for c in colours.values()}) == 5
