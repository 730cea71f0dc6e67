"""`affectflow build-features` as a user runs it: a real subprocess on a sample video."""

from __future__ import annotations

import os
import re

from tests.conftest import run_cli
from tests.tasks.test_native_logs import NATIVE


def test_a_successful_build_prints_one_line_and_nothing_on_stderr(af_home, feat_data, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "clip.mp4").write_bytes((feat_data / "single_face.mp4").read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # in this process, no server
    args = ["affectflow", "build-features", str(media), "--extractor", "mediapipe", "--max-frames", "10"]
    first = run_cli(args, env=env)
    assert first.returncode == 0, first.stderr
    assert not NATIVE.search(first.stderr), first.stderr  # MediaPipe's glog lines went to logs/native.log
    assert "RuntimeWarning" not in first.stderr and "Traceback" not in first.stderr, first.stderr
    assert re.fullmatch(r"build-features \(mediapipe\): 1 files — 1 loaded, 0 already loaded, 0 quarantined; "
                        r"10 frames, face rate 100\.0%, [0-9.]+ frames/s\n", first.stdout), first.stdout
    assert "W0000" in (af_home / "logs" / "native.log").read_text()
    again = run_cli(args, env=env)
    assert again.returncode == 0 and not NATIVE.search(again.stderr), again.stderr
    assert again.stdout == ("build-features (mediapipe): 1 files — 0 loaded, 1 already loaded, 0 quarantined; "
                            "nothing new: 1 files unchanged\n")
