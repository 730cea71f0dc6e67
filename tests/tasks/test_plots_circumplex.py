"""The circumplex plot says so when predictions fall outside its axes (they are not drawn; a model
with unbounded heads once put every point there and the plot came out empty without a word)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tasks.plots import outside_axes, plot_circumplex


def _frames(valence: np.ndarray, arousal: np.ndarray) -> pd.DataFrame:
    n = len(valence)
    return pd.DataFrame({"video_id": "v", "frame": np.arange(n), "face_id": 0, "timestamp": np.arange(n) / 25,
                         "face": 1, "valence": valence, "arousal": arousal})


def _title(path: Path) -> str:
    with Image.open(path) as image:
        return image.info["Title"]


def test_points_outside_the_axes_are_announced_in_the_title(tmp_path: Path) -> None:
    arousal = np.linspace(-13.6, 2.0, 40)  # what an unbounded arousal head predicted on a 0-3 scale
    path = plot_circumplex(_frames(np.full(40, 1.5), arousal), tmp_path / "c.png", "clip.mp4")
    title = _title(path)
    assert "warning: 34 of 40 points outside the axes, not drawn" in title
    assert "arousal -13.60 to 2.00" in title


def test_points_inside_the_axes_carry_no_warning(tmp_path: Path) -> None:
    path = plot_circumplex(_frames(np.linspace(0, 3, 20), np.linspace(3, 0, 20)), tmp_path / "c.png", "clip.mp4")
    assert "warning" not in _title(path)
    assert outside_axes(np.array([[np.nan, np.nan], [1.0, 1.0]])) == ""
