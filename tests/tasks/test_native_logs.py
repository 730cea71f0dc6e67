"""Native libraries' log lines (FFmpeg, libjpeg, OpenCV, MediaPipe) go to the native log, while
everything Python prints still reaches stderr. Run in a child process: the test needs a real
file descriptor 2 of its own."""

import os
import re
import shutil
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import logging, os, sys, threading
    from pathlib import Path
    from tasks.errors import ItemError
    from tasks.extractors.base import ExtractOptions, ItemMeta
    from tasks.extractors.mediapipe import MediaPipeExtractor
    from tasks.media import MediaItem, iter_frames

    logging.getLogger("probe").addHandler(logging.StreamHandler(sys.stderr))
    for name in sys.argv[1:]:
        item = MediaItem(Path(name), "video" if name.endswith(".mp4") else "image")
        try:
            for frame in iter_frames(item):
                print("python while decoding", name, file=sys.stderr)  # the capture is active here
                break
        except ItemError as exc:
            logging.getLogger("probe").warning("python logs: %s", exc.reason)
    extractor = MediaPipeExtractor(models_dir=Path(os.environ["MODELS"]), offline=True)
    image = MediaItem(Path(sys.argv[1]), "image")
    rows = sum(b.num_rows for b in extractor.extract(image, "s", ExtractOptions(), ItemMeta(kind="image")))
    print("mediapipe rows", rows, file=sys.stderr)
    os.write(2, b"native after the captures\\n")
""")
NATIVE = re.compile(r"moov atom|Premature end of JPEG|W0000|InitGoogle|TensorFlow Lite|\[ERROR:|libpng")


def test_native_output_goes_to_the_log_and_python_output_stays(tmp_path, feat_data, mediapipe_models_dir):
    video = (feat_data / "single_face.mp4").read_bytes()
    jpeg = (feat_data / "single_face.jpg").read_bytes()
    files = [tmp_path / "face.jpg", tmp_path / "cut.mp4", tmp_path / "cut.jpg", tmp_path / "good.mp4"]
    shutil.copy(feat_data / "single_face.jpg", files[0])
    files[1].write_bytes(video[: len(video) // 3])  # FFmpeg: "moov atom not found"
    files[2].write_bytes(jpeg[: len(jpeg) // 2])  # libjpeg: "Premature end of JPEG file"
    shutil.copy(feat_data / "single_face.mp4", files[3])
    home = tmp_path / "home"
    env = dict(os.environ, AFFECTFLOW_HOME=str(home), MODELS=str(mediapipe_models_dir),
               PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, files)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if NATIVE.search(line)] == []
    assert "python logs: cannot open video" in result.stderr
    assert f"python while decoding {files[3]}" in result.stderr
    assert "mediapipe rows 1" in result.stderr and "native after the captures" in result.stderr
    log = (home / "logs" / "native.log").read_text()
    for expected in ("moov atom not found", "Premature end of JPEG file", "W0000"):
        assert expected in log
    assert [line for line in log.splitlines() if "python" in line and not line.startswith("--- ")] == []


BAR_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from tasks.native_logs import captured
    from tasks.progress import progress_bar

    with progress_bar(3, "extract shard", unit="items", force=True) as bar:  # made before the capture
        with captured():
            os.write(2, b"native line\\n")
            bar.advance(3)
            time.sleep(0.6)  # the bar redraws (10 times a second) while fd 2 points at the log
""")


def test_a_progress_bar_draws_on_the_terminal_while_native_output_is_captured(tmp_path):
    home = tmp_path / "home"
    env = dict(os.environ, AFFECTFLOW_HOME=str(home), PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", BAR_SCRIPT], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    log = (home / "logs" / "native.log").read_text()
    assert "native line" in log and "native line" not in result.stderr
    assert "extract shard" not in log and "3/3" in result.stderr
