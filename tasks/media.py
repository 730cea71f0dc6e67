"""Finding media, hashing it, and decoding frames with OpenCV (no FFmpeg libraries needed)."""

from __future__ import annotations

import errno
import glob as globlib
import hashlib
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from tasks.errors import ItemError, SetupError, TransientError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
CSV_EXTENSIONS = (".csv",)
MAX_IMAGE_PIXELS = 100_000_000  # refuse decompression bombs before decoding
PREFETCH_FRAMES = 2  # decoded frames a video's decoding thread may run ahead (memory: 2 frames)
T = TypeVar("T")


@dataclass(frozen=True)
class MediaItem:
    path: Path
    kind: str  # "video" | "image" | "csv"


@dataclass(frozen=True)
class Frame:
    index: int
    timestamp: float
    rgb: np.ndarray


def kind_of(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in CSV_EXTENSIONS:
        return "csv"
    return None


def _walk(root: Path) -> Iterator[Path]:
    """Recursive listing that follows directory links once (no symlink loops)."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


@dataclass(frozen=True)
class Discovery:
    """Every file under a source: media items of each kind, and the files that are none."""

    items: list[MediaItem]
    others: list[Path]
    where: str


def discover(source: str) -> Discovery:
    """All files under `source`: a file, a folder (recursive) or a glob."""
    if any(ch in source for ch in "*?["):
        candidates = [Path(p) for p in sorted(globlib.glob(source, recursive=True))]
        candidates = [p for p in candidates if not p.is_dir()]
        where = f"glob {source!r}"
    else:
        root = Path(source).expanduser()
        if not root.exists() and not root.is_symlink():
            raise SetupError(f"source not found: {root}")
        candidates = list(_walk(root)) if root.is_dir() else [root]
        where = f"{'folder' if root.is_dir() else 'file'} {root}"
    items, others = [], []
    for path in candidates:
        kind = kind_of(path)
        if kind is None:
            others.append(path.absolute())
        else:
            items.append(MediaItem(path.absolute(), kind))
    return Discovery(items, others, where)


def extensions(kinds: tuple[str, ...]) -> list[str]:
    return [e for k, exts in (("video", VIDEO_EXTENSIONS), ("image", IMAGE_EXTENSIONS), ("csv", CSV_EXTENSIONS))
            if k in kinds for e in exts]


def discover_media(source: str, kinds: tuple[str, ...]) -> list[MediaItem]:
    """Media items of the wanted kinds under `source`: a file, a folder (recursive) or a glob."""
    found = discover(source)
    items = [i for i in found.items if i.kind in kinds]
    if not items:
        raise SetupError(f"no media found in {found.where} (looked for {' '.join(extensions(kinds))})")
    return items


def display_path(path: Path) -> str:
    """The path as text, with bytes that are not UTF-8 shown as escapes (`\\xff`)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_path_name(path: Path) -> None:
    """Refuse a file name that is not valid UTF-8: it cannot be stored or queried faithfully."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        raise ItemError("discover", "file name is not valid UTF-8; rename the file") from None


def content_hash(path: Path) -> str:
    """sha256 of the file's bytes (first 20 hex digits): the item's identity."""
    try:
        size = path.stat().st_size
        if size == 0:
            raise ItemError("extract", "empty file (0 bytes)")
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()[:20]
    except PermissionError:
        raise ItemError("extract", "cannot read file: permission denied") from None
    except IsADirectoryError:
        raise ItemError("extract", "is a directory, not a file") from None
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.EIO):
            raise TransientError(f"{path}: {exc.strerror}") from None
        raise ItemError("extract", f"cannot read file: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class MediaInfo:
    width: int
    height: int
    fps: float | None
    frame_count: int | None


def probe(item: MediaItem) -> MediaInfo:
    if item.kind == "image":
        frame = _read_image(item.path)
        return MediaInfo(frame.shape[1], frame.shape[0], None, 1)
    cap = _open_video(item.path)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        return MediaInfo(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                         fps, count)
    finally:
        cap.release()


def _open_video(path: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise ItemError("extract", "cannot open video: not a video file, or a codec OpenCV lacks")
    return cap


def _image_size(path: Path) -> tuple[int, int] | None:
    """Width and height from the file header alone (no decoding), or None if unknown."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except Image.DecompressionBombError as exc:
        raise ItemError("extract", f"image too large: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _read_image(path: Path) -> np.ndarray:
    size = _image_size(path)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ItemError("extract", f"image too large: {size[0]}x{size[1]} (limit {MAX_IMAGE_PIXELS:,} pixels)")
    try:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ItemError("extract", f"cannot decode image: {str(exc).strip().splitlines()[-1]}") from None
    if bgr is None:
        raise ItemError("extract", "cannot decode image: not an image file, or corrupt")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def iter_frames(item: MediaItem, fps: float | None = None, max_frames: int | None = None,
                prefetch: int = PREFETCH_FRAMES, tally: dict | None = None) -> Iterator[Frame]:
    """Decoded RGB frames with decoder timestamps (true times for variable frame rate video).

    `fps` keeps at most that many frames per second of media time; `max_frames` stops early.
    Frame indices are the decoder's, 0-based, so they line up with other tools' output.
    Video is decoded in a background thread up to `prefetch` frames ahead (0: in the caller's
    thread), so decoding overlaps the detector's work on the previous frame. `tally`, when given,
    gets `frames_read`: how many frames the decoder returned before it stopped.
    """
    if item.kind == "image":
        yield Frame(0, 0.0, _read_image(item.path))
        return
    frames = _video_frames(item.path, fps, max_frames, tally if tally is not None else {})
    yield from (prefetched(frames, prefetch) if prefetch > 0 else frames)


def _video_frames(path: Path, fps: float | None, max_frames: int | None, tally: dict) -> Iterator[Frame]:
    cap = _open_video(path)
    try:
        yield from _decode(cap, fps, max_frames, tally)
    finally:
        cap.release()


def prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """`items`, produced by a background thread at most `depth` ahead of the consumer. OpenCV
    decodes without holding the GIL, so the producer runs while the consumer computes. An error
    in the producer is raised here, after the items before it; closing this generator (the
    consumer stops early or fails) stops the producer and closes `items`."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for value in items:
                if not put((True, value)):
                    return
            put((False, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((False, exc))
        finally:
            items.close()  # type: ignore[attr-defined]

    thread = threading.Thread(target=produce, name="affectflow-decode", daemon=True)
    thread.start()
    try:
        while True:
            is_item, value = slots.get()
            if not is_item:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        thread.join()


def _decode(cap: cv2.VideoCapture, fps: float | None, max_frames: int | None, tally: dict) -> Iterator[Frame]:
    nominal = cap.get(cv2.CAP_PROP_FPS) or 0.0
    step = 1.0 / fps if fps else 0.0
    next_keep = 0.0
    kept = index = 0
    while max_frames is None or kept < max_frames:
        ok, bgr = cap.read()
        if not ok or bgr is None:
            break
        msec = cap.get(cv2.CAP_PROP_POS_MSEC)
        timestamp = msec / 1000.0 if msec > 0 or index == 0 else (index / nominal if nominal else 0.0)
        if step == 0.0 or timestamp + 1e-6 >= next_keep:
            next_keep = (next_keep if step else 0.0) + step
            kept += 1
            yield Frame(index, max(timestamp, 0.0), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        index += 1
        tally["frames_read"] = index
    if index == 0:
        raise ItemError("extract", "no frame could be decoded: truncated or corrupt video")
