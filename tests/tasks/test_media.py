"""Discovery and OpenCV decoding on real sample media, and the errors bad files get."""

import os
import re
import shutil
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from tasks.errors import ItemError, SetupError
from tasks.media import MediaItem, content_hash, discover_media, iter_frames, prefetched, probe
from tests.corpus import image_header


def test_discover_folder_recursive_and_glob(tmp_path, feat_data):
    (tmp_path / "Angry" / "deep").mkdir(parents=True)
    shutil.copy(feat_data / "single_face.mp4", tmp_path / "Angry" / "deep" / "a.mp4")
    shutil.copy(feat_data / "single_face.jpg", tmp_path / "b.jpg")
    (tmp_path / "notes.txt").write_text("not media")
    items = discover_media(str(tmp_path), ("video", "image"))
    assert [(i.path.name, i.kind) for i in items] == [("b.jpg", "image"), ("a.mp4", "video")]
    assert [i.path.name for i in discover_media(str(tmp_path / "**" / "*.mp4"), ("video",))] == ["a.mp4"]


def test_symlink_loop_is_walked_once(tmp_path, feat_data):
    shutil.copy(feat_data / "single_face.jpg", tmp_path / "x.jpg")
    os.symlink(tmp_path, tmp_path / "loop")
    assert len(discover_media(str(tmp_path), ("image",))) == 1


def test_empty_folder_and_missing_source_are_setup_errors(tmp_path):
    with pytest.raises(SetupError, match="no media found in folder"):
        discover_media(str(tmp_path), ("video",))
    with pytest.raises(SetupError, match="source not found"):
        discover_media(str(tmp_path / "nope"), ("video",))


def test_decoder_timestamps_match_openface(feat_data, shared_dir):
    frames = list(iter_frames(MediaItem(feat_data / "WolfgangLanger_Pexels.mp4", "video")))
    assert len(frames) == 472
    openface = (shared_dir / "fixtures/openface/mode_A/WolfgangLanger_Pexels.csv").read_text().splitlines()
    of_last = float(openface[-1].split(",")[2])
    assert frames[-1].timestamp == pytest.approx(of_last, abs=0.002)
    assert frames[0].rgb.shape == (360, 640, 3)


def test_fps_and_max_frames_sampling(feat_data):
    item = MediaItem(feat_data / "WolfgangLanger_Pexels.mp4", "video")
    sampled = list(iter_frames(item, fps=5))
    assert 95 <= len(sampled) <= 100
    gaps = [b.timestamp - a.timestamp for a, b in zip(sampled, sampled[1:], strict=False)]
    assert min(gaps) >= 0.16
    assert len(list(iter_frames(item, max_frames=7))) == 7


def test_prefetched_decoding_gives_the_same_frames(feat_data):
    item = MediaItem(feat_data / "face_noface.mov", "video")
    ahead, inline = list(iter_frames(item, fps=10)), list(iter_frames(item, fps=10, prefetch=0))
    assert [(f.index, f.timestamp) for f in ahead] == [(f.index, f.timestamp) for f in inline]
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(ahead, inline, strict=True))


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "affectflow-decode"]


def test_prefetch_raises_the_producers_error_after_its_items():
    def items():
        yield from (1, 2)
        raise ItemError("extract", "truncated")

    seen = []
    with pytest.raises(ItemError, match="truncated"):
        for value in prefetched(items(), 1):
            seen.append(value)
    assert seen == [1, 2] and not _decode_threads()


def test_stopping_early_stops_the_decoder_and_closes_the_source():
    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    frames = prefetched(endless(), 2)
    assert [next(frames) for _ in range(3)] == [0, 1, 2]
    frames.close()
    assert closed.is_set() and not _decode_threads()


def test_image_is_one_frame(feat_data):
    item = MediaItem(feat_data / "multi_face.jpg", "image")
    (frame,) = iter_frames(item)
    assert frame.timestamp == 0.0 and probe(item).fps is None


@pytest.mark.parametrize(
    "name, content, reason",
    [("zero.mp4", b"", "empty file"), ("text.mp4", b"just some text\n" * 50, "cannot open video"),
     ("noise.jpg", os.urandom(3000), "cannot decode image")],
)
def test_bad_files_raise_item_errors(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    item = MediaItem(path, "video" if name.endswith(".mp4") else "image")
    with pytest.raises(ItemError, match=reason):
        content_hash(path)
        list(iter_frames(item))


def test_truncated_mp4(tmp_path, feat_data):
    data = (feat_data / "single_face.mp4").read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ItemError, match="cannot open video|no frame could be decoded"):
        list(iter_frames(MediaItem(path, "video")))


def test_dangling_link_is_unreadable(tmp_path):
    link = tmp_path / "gone.mp4"
    os.symlink(tmp_path / "missing.mp4", link)
    with pytest.raises(ItemError, match="cannot read file"):
        content_hash(link)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_permission_denied(tmp_path, feat_data):
    path = tmp_path / "locked.mp4"
    shutil.copy(feat_data / "single_face.mp4", path)
    path.chmod(0)
    with pytest.raises(ItemError, match="permission denied"):
        content_hash(path)


@pytest.mark.parametrize("fmt", ["hdr", "gif", "pam", "pfm", "ppm", "bmp", "ras", "png"])
def test_pixel_limit_holds_for_every_format_before_decoding(tmp_path, fmt):
    path = tmp_path / "photo.jpg"  # OpenCV picks the decoder from the bytes, not the name
    path.write_bytes(image_header(fmt, 11000, 10000))
    with pytest.raises(ItemError, match=r"^image too large: 11000x10000 \(limit 100,000,000 pixels\)$"):
        list(iter_frames(MediaItem(path, "image")))


@pytest.mark.parametrize("fmt", ["hdr", "gif", "pam", "pfm", "ppm", "bmp", "ras", "png", "tiff", "webp"])
def test_small_images_of_every_format_still_decode(tmp_path, fmt):
    pixels = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    written = tmp_path / f"small.{fmt}"
    assert cv2.imwrite(str(written), pixels.astype(np.float32) / 255 if fmt in ("hdr", "pfm") else pixels)
    path = written.rename(tmp_path / "small.jpg")
    (frame,) = iter_frames(MediaItem(path, "image"))
    assert frame.rgb.shape == (20, 30, 3)


def test_gif_claiming_65535_squared_pixels_is_one_line(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(image_header("gif", 65535, 65535))  # a header Pillow rejects, OpenCV believes
    with pytest.raises(ItemError) as raised:
        list(iter_frames(MediaItem(path, "image")))
    assert raised.value.reason == "image too large: 65535x65535 (limit 100,000,000 pixels)"


BACKSTOP = """
import sys
from pathlib import Path
import tasks.extractors.mediapipe  # mediapipe imports cv2 too: tasks.media must come first
from tasks import media
media._image_size = lambda path: None  # a format no header reader knows
try:
    list(media.iter_frames(media.MediaItem(Path(sys.argv[1]), "image")))
except media.ItemError as exc:
    print(exc.reason)
"""


def test_opencv_pixel_limit_backs_up_the_header_check(tmp_path):
    """For a format no header reader knows, OpenCV's own limit, set to ours before cv2 loads,
    refuses the image (11000x10000 is under OpenCV's default limit of 2**30), in one line."""
    path = tmp_path / "huge.jpg"
    path.write_bytes(image_header("gif", 11000, 10000))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), AFFECTFLOW_HOME=str(tmp_path / "home"))
    env.pop("OPENCV_IO_MAX_IMAGE_PIXELS", None)
    result = subprocess.run([sys.executable, "-c", BACKSTOP, str(path)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.stdout.strip() == "image too large: over OpenCV's pixel limit (100,000,000 pixels unless set otherwise)", result.stderr


def test_fifo_and_device_links_are_not_regular_files(tmp_path):
    fifo, zero = tmp_path / "pipe.mp4", tmp_path / "zero.mp4"
    os.mkfifo(fifo)
    zero.symlink_to("/dev/zero")
    for path, kind in ((fifo, "a FIFO"), (zero, "a character device")):
        with pytest.raises(ItemError, match=re.escape(f"not a regular file ({kind})")):
            content_hash(path)  # refused before opening: opening a FIFO would wait for a writer
