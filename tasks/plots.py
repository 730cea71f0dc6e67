"""Prediction plots (PNG, matplotlib's Agg backend, no display needed).

Each function takes the per-frame predictions in wide form (`wide_frame`: columns
`timestamp`, `face`, `dominant_emotion`, `p_<emotion>`, `stress_prob`, `valence`, `arousal`)
and writes one titled, labelled figure. Frames without a face are gaps, never zeros.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Circle, Patch

from data_contracts import load_emotion_map

matplotlib.use("Agg")  # files only; pyplot picks its backend at the first figure, so this holds

DPI = 110
NO_FACE = "#d9d9d9"
# Colours people read without a legend: anger red, happiness amber, sadness blue, …
EMOTION_COLOURS = {
    "angry": "#d62728", "happy": "#f2a900", "sad": "#1f77b4", "neutral": "#7f7f7f",
    "fearful": "#9467bd", "fear": "#9467bd", "disgust": "#2ca02c", "surprised": "#17becf",
    "surprise": "#17becf", "calm": "#8fbc8f", "contempt": "#8c564b",
}
_FALLBACK = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
             "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
             "#f7b6d2", "#dbdb8d", "#9edae5")  # matplotlib's tab20


def wide_frame(rows: pd.DataFrame, emotions: list[str], level: str = "frame") -> pd.DataFrame:
    """Rows of one level with one `p_<emotion>` column per emotion (for CSV files and plots)."""
    part = rows[rows["level"] == level].reset_index(drop=True)
    probs = [json.loads(v) if isinstance(v, str) else {} for v in part.get("emotion_probs", [])]
    wide = part.drop(columns=[c for c in ("emotion_probs", "level") if c in part])
    for emotion in emotions:
        wide[f"p_{emotion}"] = [p.get(emotion, np.nan) for p in probs]
    if level == "window":
        wide = wide.drop(columns=[c for c in ("frame", "success") if c in wide])
    wide = wide.rename(columns={"success": "face"})
    for column in ("frame", "face_id", "face", "window_start", "window_end"):
        if column in wide:
            wide[column] = pd.to_numeric(wide[column]).astype("Int64")
    order = ["video_id", "frame", "face_id", "timestamp", "face", "window_start", "window_end", "dominant_emotion",
             "dominant_prob", *[f"p_{e}" for e in emotions], "stress_prob", "valence", "arousal"]
    return wide[[c for c in order if c in wide]]


def emotion_colours(emotions: list[str]) -> dict[str, str]:
    spare = iter(c for c in _FALLBACK if c not in EMOTION_COLOURS.values())
    return {e: EMOTION_COLOURS.get(e) or next(spare, "#000000") for e in emotions}


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write the PNG with its title in the file's metadata (`Title`), for catalogues and tests."""
    title = next((ax.get_title() for ax in fig.axes if ax.get_title()), "")
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Title": title.replace("\n", " — ")})
    plt.close(fig)
    return path


def _time(frames: pd.DataFrame) -> np.ndarray:
    return frames["timestamp"].to_numpy(np.float64)


def _no_face_spans(ax: plt.Axes, frames: pd.DataFrame) -> None:
    """Grey spans where no face was found."""
    edges, missing = _frame_edges(_time(frames)), (frames["face"] != 1).to_numpy()
    for start, end in _runs(missing):
        ax.axvspan(edges[start], edges[end], color=NO_FACE, alpha=0.6, lw=0, zorder=0)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) index pairs of consecutive True values."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _frame_edges(t: np.ndarray) -> np.ndarray:
    """Start and end time of each frame (a frame lasts until the next; the last one a median step)."""
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    return np.append(t, t[-1] + step) if len(t) else t


def _dominant_band(ax: plt.Axes, frames: pd.DataFrame, colours: dict) -> None:
    """One coloured bar per run of frames with the same dominant emotion, at true timestamps."""
    edges = _frame_edges(_time(frames))
    labels = frames["dominant_emotion"].where(frames["dominant_emotion"].notna(), "").to_numpy(object)
    for label in dict.fromkeys(labels):
        spans = [(edges[a], edges[b] - edges[a]) for a, b in _runs(labels == label)]
        ax.broken_barh(spans, (0, 1), color=colours.get(label, NO_FACE), lw=0)


def _one_face(frames: pd.DataFrame) -> pd.DataFrame:
    """The first face track, one row per frame (plots show one face's course over time)."""
    faces = frames[frames["face"] == 1]["face_id"]
    chosen = faces.mode().iloc[0] if len(faces) else frames["face_id"].iloc[0]
    keep = (frames["face_id"] == chosen) | ~frames["frame"].isin(frames.loc[frames["face"] == 1, "frame"])
    return frames[keep].drop_duplicates("frame").sort_values("frame").reset_index(drop=True)


def plot_timeline(frames: pd.DataFrame, emotions: list[str], path: Path, title: str) -> Path:
    """Emotion probabilities over time, with a band of the dominant emotion underneath."""
    frames = _one_face(frames)
    colours, t = emotion_colours(emotions), _time(frames)
    fig, (ax, band) = plt.subplots(2, 1, figsize=(10, 4.8), sharex=True,
                                   gridspec_kw={"height_ratios": [5, 0.7], "hspace": 0.08})
    _no_face_spans(ax, frames)
    for emotion in emotions:
        ax.plot(t, frames[f"p_{emotion}"], color=colours[emotion], lw=1.6, label=emotion)
    ax.set(ylim=(0, 1.02), ylabel="probability", title=f"Emotion probabilities over time\n{title}")
    ax.grid(alpha=0.3)
    _dominant_band(band, frames, colours)
    edges = _frame_edges(t)
    band.set(yticks=[], xlabel="time (s)", ylim=(0, 1), xlim=(edges[0], edges[-1]))
    band.set_ylabel("dominant", rotation=0, ha="right", va="center")
    handles = [Patch(color=colours[e], label=e) for e in emotions] + [Patch(color=NO_FACE, label="no face")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, title="emotion")
    return _save(fig, path)


def plot_distribution(frames: pd.DataFrame, emotions: list[str], path: Path, title: str) -> Path:
    """Share of face frames per dominant emotion, beside the mean probability of each emotion."""
    faces = frames[frames["face"] == 1]
    colours = emotion_colours(emotions)
    share = [100 * float((faces["dominant_emotion"] == e).mean()) if len(faces) else 0.0 for e in emotions]
    mean = [100 * float(faces[f"p_{e}"].mean()) if len(faces) else 0.0 for e in emotions]
    x = np.arange(len(emotions))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(emotions) + 2), 4.2))
    bars = ax.bar(x - 0.2, share, 0.4, color=[colours[e] for e in emotions])
    ax.bar(x + 0.2, mean, 0.4, color=[colours[e] for e in emotions], alpha=0.45, hatch="//", edgecolor="white")
    ax.bar_label(bars, fmt="%.0f%%", padding=2, fontsize=9)
    ax.set_xticks(x, emotions)
    ax.set(ylabel="% of face frames", ylim=(0, max([*share, *mean, 1]) * 1.18),
           title=f"Emotion distribution over {len(faces)} face frames\n{title}")
    ax.legend(handles=[Patch(color="#555555", label="frames where it is the dominant emotion"),
                       Patch(facecolor="#555555", alpha=0.45, hatch="//", edgecolor="white",
                             label="mean probability")], frameon=False, ncol=2,
              loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _circumplex_axes(ax: plt.Axes, centre: float, radius: float) -> None:
    ax.add_patch(Circle((centre, centre), radius, fill=False, color="#999999", lw=1))
    ax.axhline(centre, color="#bbbbbb", lw=0.8)
    ax.axvline(centre, color="#bbbbbb", lw=0.8)
    corners = {(1, 1): "excited", (-1, 1): "tense", (-1, -1): "depressed", (1, -1): "relaxed"}
    for (sx, sy), word in corners.items():
        ax.text(centre + sx * radius * 0.82, centre + sy * radius * 0.9, word, ha="center", va="center",
                color="#777777", fontsize=9, style="italic")


CIRCUMPLEX_LIMITS = (-0.1, 3.1)  # the label scale 0-3 and a margin


def outside_axes(va: np.ndarray, limits: tuple[float, float] = CIRCUMPLEX_LIMITS) -> str:
    """A warning when predicted points fall outside the plot's axes (they would not be drawn, and
    a model with unbounded heads can put all of them there), else ''."""
    known = va[~np.isnan(va).any(1)]
    outside = ((known < limits[0]) | (known > limits[1])).any(1)
    if not outside.any():
        return ""
    low, high = known.min(0), known.max(0)
    return (f"warning: {int(outside.sum())} of {len(known)} points outside the axes, not drawn "
            f"(valence {low[0]:.2f} to {high[0]:.2f}, arousal {low[1]:.2f} to {high[1]:.2f})")


def plot_circumplex(frames: pd.DataFrame, path: Path, title: str) -> Path:
    """Valence-arousal trajectory on Russell's circumplex (label scale 0-3, neutral at 1.5),
    coloured by time, with the emotion map's reference points; a warning under the title when
    predictions fall outside the axes."""
    frames = _one_face(frames)
    va = frames[["valence", "arousal"]].to_numpy(np.float64)
    warning = outside_axes(va)
    t = _time(frames)
    fig, ax = plt.subplots(figsize=(6.2, 6))
    _circumplex_axes(ax, 1.5, 1.5)
    for affect in load_emotion_map().affects.values():
        if affect.valence is not None and affect.arousal is not None:
            ax.plot(affect.valence, affect.arousal, "D", color="#444444", ms=5)
            ax.annotate(affect.emotion, (affect.valence, affect.arousal), xytext=(5, 4),
                        textcoords="offset points", fontsize=8, color="#444444")
    ax.plot(va[:, 0], va[:, 1], color="#888888", lw=0.6, alpha=0.6)
    points = ax.scatter(va[:, 0], va[:, 1], c=t, cmap="viridis", s=12, zorder=3)
    fig.colorbar(points, ax=ax, label="time (s)", shrink=0.8)
    valid = np.flatnonzero(~np.isnan(va).any(1))
    if len(valid):
        ax.plot(*va[valid[0]], "o", ms=9, mfc="none", mec="black", mew=1.5, label="start")
        ax.plot(*va[valid[-1]], "s", ms=9, mfc="none", mec="black", mew=1.5, label="end")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    ax.set(xlim=CIRCUMPLEX_LIMITS, ylim=CIRCUMPLEX_LIMITS, aspect="equal", xlabel="valence (unpleasant → pleasant)",
           ylabel="arousal (calm → activated)", title=f"Valence-arousal trajectory\n{title}" + (f"\n{warning}" if warning else ""))
    if warning:
        ax.title.set_color("#b03a2e")
    return _save(fig, path)


def plot_stress(frames: pd.DataFrame, path: Path, title: str) -> Path:
    """Stress probability over time; above the 0.5 line the model calls the frame stressed."""
    frames = _one_face(frames)
    t, stress = _time(frames), frames["stress_prob"].to_numpy(np.float64)
    fig, ax = plt.subplots(figsize=(10, 3.6))
    _no_face_spans(ax, frames)
    ax.plot(t, stress, color="#c0392b", lw=1.6, label="stress probability")
    ax.fill_between(t, 0.5, stress, where=stress > 0.5, color="#c0392b", alpha=0.25, label="stressed (> 0.5)")
    ax.axhline(0.5, color="#555555", ls="--", lw=1)
    edges = _frame_edges(t)
    ax.set(ylim=(0, 1.02), xlim=(edges[0], edges[-1]), xlabel="time (s)", ylabel="probability",
           title=f"Stress over time\n{title}")
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=[*handles, Patch(color=NO_FACE, label="no face")], loc="upper left",
              bbox_to_anchor=(1.01, 1), frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, path)


PLOTS = ("timeline", "distribution", "circumplex", "stress")


def plot_all(frames: pd.DataFrame, emotions: list[str], out_dir: Path, title: str) -> list[Path]:
    """The four plots as `<out_dir>/<name>.png`; a plot whose model head is absent is skipped."""
    paths = []
    if emotions and frames[[f"p_{e}" for e in emotions]].notna().any().any():
        paths.append(plot_timeline(frames, emotions, out_dir / "timeline.png", title))
        paths.append(plot_distribution(frames, emotions, out_dir / "distribution.png", title))
    if frames[["valence", "arousal"]].notna().any().any():
        paths.append(plot_circumplex(frames, out_dir / "circumplex.png", title))
    if frames["stress_prob"].notna().any():
        paths.append(plot_stress(frames, out_dir / "stress.png", title))
    return paths


def plot_circumplex_points(frames: pd.DataFrame, emotions: list[str], path: Path, title: str) -> Path:
    """Valence-arousal of every face in a set of still images (one point each, coloured by its
    dominant emotion): where a folder of images sits on Russell's circumplex."""
    faces = frames[frames["face"] == 1]
    colours = emotion_colours(emotions)
    fig, ax = plt.subplots(figsize=(6.2, 6))
    _circumplex_axes(ax, 1.5, 1.5)
    for emotion in emotions:
        part = faces[faces["dominant_emotion"] == emotion]
        if len(part):
            ax.scatter(part["valence"], part["arousal"], s=14, color=colours[emotion], label=f"{emotion} ({len(part)})",
                       alpha=0.7, zorder=3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, frameon=False, title="dominant emotion")
    ax.set(xlim=(-0.1, 3.1), ylim=(-0.1, 3.1), aspect="equal", xlabel="valence (unpleasant → pleasant)",
           ylabel="arousal (calm → activated)", title=f"Valence-arousal of {len(faces)} faces\n{title}")
    return _save(fig, path)


def plot_stress_histogram(frames: pd.DataFrame, path: Path, title: str) -> Path:
    """How stress probability is spread over a set of still images (above 0.5: stressed)."""
    stress = frames.loc[frames["face"] == 1, "stress_prob"].dropna().to_numpy(np.float64)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.hist(stress, bins=[i / 20 for i in range(21)], color="#c0392b", alpha=0.8)
    ax.axvline(0.5, color="#555555", ls="--", lw=1)
    share = 100 * float((stress > 0.5).mean()) if len(stress) else 0.0
    ax.set(xlim=(0, 1), xlabel="stress probability", ylabel="images",
           title=f"Stress over {len(stress)} faces: {share:.0f}% above 0.5\n{title}")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_folder(frames: pd.DataFrame, emotions: list[str], out_dir: Path, title: str) -> list[Path]:
    """The summary plots of a folder of still images (distributions, not time courses)."""
    paths = []
    if emotions and frames[[f"p_{e}" for e in emotions]].notna().any().any():
        paths.append(plot_distribution(frames, emotions, out_dir / "distribution.png", title))
    if frames[["valence", "arousal"]].notna().any().any():
        paths.append(plot_circumplex_points(frames, emotions, out_dir / "circumplex.png", title))
    if frames["stress_prob"].notna().any():
        paths.append(plot_stress_histogram(frames, out_dir / "stress.png", title))
    return paths


def png_data_url(path: Path) -> str:
    """A PNG as a `data:` URL (inline in HTML and in Prefect image artifacts)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()
