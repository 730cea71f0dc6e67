"""The `openface` extractor: runs OpenFace 2.x FeatureExtraction per item, imports its CSV.

OpenFace is not installed here, so each test writes a stand-in `FeatureExtraction`: an
executable taking the same arguments (-f / -fdir, -out_dir, -of, the output flags) that writes
OpenFace's real CSV of that video from ../shared/fixtures/openface (and prints to stdout and
stderr, like OpenFace). Where a real FeatureExtraction is found ($OPENFACE_BIN or on PATH) the
tests marked `binary` run against it too; they skip otherwise and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from data_contracts import FRAMES
from tasks.errors import ItemError, SetupError
from tasks.extractors import get_extractor
from tasks.extractors.base import ExtractOptions, ItemMeta
from tasks.extractors.openface import DEFAULT_FLAGS, OpenFaceExtractor, find_binary
from tasks.extractors.openface_csv import OpenFaceCsvExtractor
from tasks.media import MediaItem

STDOUT_MARK = "stand-in FeatureExtraction: tracking"
STDERR_MARK = "stand-in FeatureExtraction: warning on stderr"
STAND_IN = '''#!{python}
"""Stand-in for OpenFace 2.x FeatureExtraction: same arguments, writes OpenFace's real CSV."""
import json, shutil, sys
from pathlib import Path

FIXTURES = {fixtures}
args = sys.argv[1:]

def value(flag):
    return args[args.index(flag) + 1] if flag in args else None

source, folder = value("-f"), value("-fdir")
with open({calls!r}, "a") as fh:  # the command line, and what the image folder held
    listing = sorted(p.name for p in Path(folder).iterdir()) if folder else None
    fh.write(json.dumps({{"argv": args, "folder": listing}}) + "\\n")
out_dir, name = Path(value("-out_dir")), value("-of")
print("{stdout_mark}", source or folder)
print("{stderr_mark}", file=sys.stderr)
if folder is not None:  # an image folder: one row per image, OpenFace's first row of single_face
    lines = Path(FIXTURES["single_face"]).read_text().splitlines()
    images = sorted(p.name for p in Path(folder).iterdir())
    rows = [",".join([str(i + 1), lines[1].split(",", 2)[1], " 0.000"] + lines[1].split(",")[3:])
            for i in range(len(images))]
    text = "\\n".join([lines[0], *rows]) + "\\n"
else:
    stem = Path(source).stem
    if stem not in FIXTURES:
        print("ERROR: could not open " + source, file=sys.stderr)
        sys.exit(1)
    text = Path(FIXTURES[stem]).read_text()
out_dir.mkdir(parents=True, exist_ok=True)
(out_dir / (name + ".csv")).write_text(text)
(out_dir / (name + "_of_details.txt")).write_text("Input:" + (source or folder) + "\\n")
'''


@dataclass(frozen=True)
class Binary:
    path: Path
    real: bool
    calls: Path | None = None  # the stand-in's record of its command lines

    def argv(self) -> list[list[str]]:
        return [json.loads(line)["argv"] for line in self.calls.read_text().splitlines()] if self.calls else []

    def folders(self) -> list[list[str] | None]:
        return [json.loads(line)["folder"] for line in self.calls.read_text().splitlines()] if self.calls else []


def fixture_csvs(shared: Path) -> dict[str, str]:
    of = shared / "fixtures" / "openface"
    return {p.stem: str(p) for p in [*(of / "mode_A").glob("*.csv"), *(of / "ravdess-actor05").glob("*.csv")]}


def write_stand_in(folder: Path, shared: Path) -> Binary:
    folder.mkdir(parents=True, exist_ok=True)
    path, calls = folder / "FeatureExtraction", folder / "calls.jsonl"
    path.write_text(STAND_IN.format(python=sys.executable, fixtures=repr(fixture_csvs(shared)), calls=str(calls),
                                    stdout_mark=STDOUT_MARK, stderr_mark=STDERR_MARK))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return Binary(path, real=False, calls=calls)


def _real_binary() -> Path | None:
    found = os.environ.get("OPENFACE_BIN") or shutil.which("FeatureExtraction")
    return Path(found) if found else None


@pytest.fixture()
def stand_in(tmp_path, shared_dir) -> Binary:
    return write_stand_in(tmp_path / "openface-bin", shared_dir)


@pytest.fixture(params=["stand-in", "real"])
def binary(request, tmp_path, shared_dir) -> Binary:
    if request.param == "real":
        real = _real_binary()
        if real is None:
            pytest.skip("no real OpenFace here: set OPENFACE_BIN or put FeatureExtraction on PATH to run "
                        "this test against it (it ran against the stand-in)")
        return Binary(real, real=True)
    return write_stand_in(tmp_path / "openface-bin", shared_dir)


def run(extractor, path: Path, kind: str, options: ExtractOptions | None = None) -> tuple[pa.Table, ItemMeta]:
    meta = ItemMeta(kind=kind)
    batches = list(extractor.extract(MediaItem(path, kind), "src", options or ExtractOptions(), meta))
    return pa.Table.from_batches(batches, schema=FRAMES.arrow_schema()), meta


def assert_same_frames(got: pa.Table, want: pa.Table, exact: bool) -> None:
    """Row for row the same; a real OpenFace build may differ from the fixtures' in the last digits."""
    assert got.num_rows == want.num_rows
    if exact:
        assert got.equals(want)
        return
    assert np.mean(got["success"].to_numpy() == want["success"].to_numpy()) > 0.95
    both = (got["success"].to_numpy() == 1) & (want["success"].to_numpy() == 1)
    for column, bound in (("x_30", 2.0), ("AU12_r", 0.3)):
        diff = np.abs(got[column].to_numpy(zero_copy_only=False)[both] - want[column].to_numpy(zero_copy_only=False)[both])
        assert np.median(diff) < bound, column


def test_video_loads_exactly_what_importing_openfaces_csv_does(binary, feat_data, shared_dir):
    extractor = OpenFaceExtractor(binary=str(binary.path))
    got, meta = run(extractor, feat_data / "WolfgangLanger_Pexels.mp4", "video")
    want, _ = run(OpenFaceCsvExtractor(), shared_dir / "fixtures/openface/mode_A/WolfgangLanger_Pexels.csv", "csv")
    assert_same_frames(got, want, exact=not binary.real)
    assert meta.kind == "video" and meta.extra["openface_flags"] == list(DEFAULT_FLAGS)
    if not binary.real:
        (argv,) = binary.argv()
        assert argv[:2] == ["-f", str(feat_data / "WolfgangLanger_Pexels.mp4")]
        assert argv[2] == "-out_dir" and argv[4:6] == ["-of", "openface"] and argv[6:] == list(DEFAULT_FLAGS)


def test_no_face_rows_are_blanked_like_the_import(binary, feat_data):
    got, _ = run(OpenFaceExtractor(binary=str(binary.path)), feat_data / "no_face.mp4", "video")
    assert got.num_rows == 95 and sum(got["success"].to_pylist()) == 0
    assert got["AU12_r"].null_count == 95 and got["x_0"].null_count == 95


def test_an_image_runs_as_an_image_folder(binary, feat_data):
    got, meta = run(OpenFaceExtractor(binary=str(binary.path)), feat_data / "single_face.jpg", "image")
    assert got.num_rows == 1 and got["frame"].to_pylist() == [0] and got["video_id"].to_pylist() == ["src"]
    assert meta.kind == "image"
    if not binary.real:
        (argv,) = binary.argv()
        assert argv[0] == "-fdir" and binary.folders() == [["single_face.jpg"]]


def test_fps_and_max_frames_keep_what_our_decoder_would(stand_in, feat_data):
    extractor = OpenFaceExtractor(binary=str(stand_in.path))
    first, _ = run(extractor, feat_data / "WolfgangLanger_Pexels.mp4", "video", ExtractOptions(max_frames=10))
    assert first["frame"].to_pylist() == list(range(10))
    sparse, _ = run(extractor, feat_data / "WolfgangLanger_Pexels.mp4", "video", ExtractOptions(fps=2.0))
    stamps = np.array(sparse["timestamp"].to_pylist())
    assert 35 <= len(stamps) <= 45 and np.all(np.diff(stamps) >= 0.5 - 0.05)  # 472 frames at 23.976 fps


def test_flags_and_binary_are_in_the_config(stand_in, tmp_path, shared_dir):
    default = OpenFaceExtractor(binary=str(stand_in.path))
    more = OpenFaceExtractor(binary=str(stand_in.path), flags=[*DEFAULT_FLAGS, "-3Dfp"])
    assert default.config()["flags"] == list(DEFAULT_FLAGS) and len(default.config()["binary_sha256"]) == 64
    options = ExtractOptions()
    assert default.config_hash(options) != more.config_hash(options)
    other = write_stand_in(tmp_path / "other-build", shared_dir)
    other.path.write_text(other.path.read_text() + "# another build\n")
    assert OpenFaceExtractor(binary=str(other.path)).config_hash(options) != default.config_hash(options)
    with pytest.raises(ValueError, match="set per item"):
        OpenFaceExtractor(binary=str(stand_in.path), flags=["-aus", "-out_dir", "/tmp"])


def test_missing_binary_is_one_line_naming_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENFACE_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SetupError, match=r"OPENFACE_BIN is unset and it is not on PATH.*install") as missing:
        get_extractor("openface").check_ready()
    assert "\n" not in str(missing.value) and "github.com/TadasBaltrusaitis/OpenFace" in str(missing.value)
    monkeypatch.setenv("OPENFACE_BIN", str(tmp_path / "nowhere" / "FeatureExtraction"))
    with pytest.raises(SetupError, match=r"OPENFACE_BIN=.*nowhere.* is not an executable file"):
        get_extractor("openface").check_ready()


def test_binary_found_on_path_or_from_the_variable(stand_in, monkeypatch):
    monkeypatch.delenv("OPENFACE_BIN", raising=False)
    monkeypatch.setenv("PATH", f"{stand_in.path.parent}{os.pathsep}{os.environ['PATH']}")
    assert find_binary(None) == stand_in.path.resolve()
    monkeypatch.setenv("OPENFACE_BIN", str(stand_in.path))
    assert get_extractor("openface").binary() == stand_in.path.resolve()


def test_a_failing_run_is_an_item_error_with_its_last_line(stand_in, tmp_path, feat_data):
    clip = tmp_path / "unknown_clip.mp4"
    shutil.copy(feat_data / "single_face.mp4", clip)  # the stand-in has no OpenFace CSV for it
    with pytest.raises(ItemError, match=r"failed \(exit 1\): ERROR: could not open .*unknown_clip.mp4"):
        run(OpenFaceExtractor(binary=str(stand_in.path)), clip, "video")


def test_a_run_that_writes_no_csv_is_an_item_error(tmp_path, feat_data):
    silent = tmp_path / "FeatureExtraction"
    silent.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        print("done")
        """))
    silent.chmod(0o755)
    with pytest.raises(ItemError, match="exited 0 but wrote no CSV"):
        run(OpenFaceExtractor(binary=str(silent)), feat_data / "single_face.mp4", "video")
