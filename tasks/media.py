"""Finding media, hashing it, and decoding frames with OpenCV (no FFmpeg libraries needed).

Only regular files are read: a FIFO, a device or a link to one (`/dev/zero`) is refused before
it is opened, and again on the opened file. The image pixel limit holds for every format OpenCV
decodes (it picks the decoder from the bytes, not the name): the size comes from the header
before any decoding, read here for the formats Pillow cannot read (Radiance HDR, PAM, PFM) and
for those whose header OpenCV trusts even when Pillow rejects the rest (GIF, PNG, BMP, Sun
raster, PNM), by Pillow for the others; OpenCV's own limit is set to the same number before it
loads, for anything else.
"""

from __future__ import annotations

import errno
import glob as globlib
import hashlib
import io
import os
import queue
import re
import stat
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from tasks.errors import ItemError, SetupError, TransientError
from tasks.native_logs import capturing

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
CSV_EXTENSIONS = (".csv",)
MAX_IMAGE_PIXELS = 100_000_000  # refuse decompression bombs before decoding
HEADER_BYTES = 65536  # enough for any header `_header_size` reads (HDR headers carry comments)
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))  # read once, as cv2 loads
import cv2  # noqa: E402  (after its limit is set)

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


def source_base(source: str) -> Path:
    """The folder or file a source names, absolute; for a glob, the folder before its first
    wildcard (what a manifest's paths must stay inside, with the manifest's own folder)."""
    path = Path(source).expanduser()
    if any(ch in source for ch in "*?["):
        fixed = list(path.parts)
        cut = next((i for i, part in enumerate(fixed) if any(ch in part for ch in "*?[")), len(fixed))
        path = Path(*fixed[:cut]) if cut else Path()
    return path.absolute()


def display_path(path: Path) -> str:
    """The path as text, with bytes that are not UTF-8 shown as escapes (`\\xff`)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_path_name(path: Path) -> None:
    """Refuse a file name that is not valid UTF-8: it cannot be stored or queried faithfully."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        raise ItemError("discover", "file name is not valid UTF-8; rename the file") from None


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def require_regular(mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise ItemError("extract", "is a directory, not a file")
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a plain file")
    raise ItemError("extract", f"not a regular file ({kind})")


def open_regular(path: Path) -> io.BufferedReader:
    """`path` opened for reading when it is a regular file, else `ItemError`: checked before
    opening (opening a FIFO waits for a writer, opening a device may act on it) and again on the
    opened file, which is opened without waiting in case the path changed in between."""
    require_regular(path.stat().st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        require_regular(os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def content_hash(path: Path) -> str:
    """sha256 of the file's bytes (first 20 hex digits): the item's identity."""
    try:
        with open_regular(path) as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise ItemError("extract", "empty file (0 bytes)")
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


@capturing  # decoders' own log lines go to the native log (tasks.native_logs)
def probe(item: MediaItem) -> MediaInfo:
    if item.kind == "image":
        frame = read_image(item.path)
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


_PNM = re.compile(rb"P[1-6Ff]\s+(?:#[^\n]*\s+)*(\d+)\s+(?:#[^\n]*\s+)*(\d+)")
_PAM = re.compile(rb"\n(WIDTH|HEIGHT)\s+(\d+)")
_HDR = re.compile(rb"\n\s*[-+]([XY])\s+(\d+)\s+[-+]([XY])\s+(\d+)")  # the resolution line
_FIXED = {  # magic -> (struct format, offset) of width, height
    b"GIF87a": ("<HH", 6), b"GIF89a": ("<HH", 6), b"\x89PNG\r\n\x1a\n": (">II", 16),
    b"\x59\xa6\x6a\x95": (">II", 4), b"BM": ("<ii", 18),
}


def _header_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from a header at a fixed place or in text lines (see the module
    docstring for which formats), or None: the other formats are read by Pillow."""
    for magic, (layout, offset) in _FIXED.items():
        if head.startswith(magic) and len(head) >= offset + struct.calcsize(layout):
            if magic == b"BM" and head[14:18] == b"\x0c\0\0\0":  # OS/2 bitmap header: 16-bit sizes
                layout = "<HH"
            width, height = struct.unpack_from(layout, head, offset)
            return abs(width), abs(height)
    if head.startswith((b"#?RADIANCE", b"#?RGBE")) and (m := _HDR.search(head)) and m[1] != m[3]:
        sizes = {m[1]: int(m[2]), m[3]: int(m[4])}
        return sizes[b"X"], sizes[b"Y"]
    if head.startswith(b"P7"):
        sizes = {key: int(value) for key, value in _PAM.findall(head)}
        return (sizes[b"WIDTH"], sizes[b"HEIGHT"]) if len(sizes) == 2 else None
    m = _PNM.match(head)
    return (int(m[1]), int(m[2])) if m else None


def _image_size(path: Path) -> tuple[int, int] | None:
    """Width and height from the file header alone (no decoding), or None if unknown."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open_regular(path) as fh:
            size = _header_size(fh.read(HEADER_BYTES))
    except OSError as exc:
        raise ItemError("extract", f"cannot read file: {exc.strerror or exc}") from None
    if size is not None:
        return size
    try:
        with Image.open(path) as img:
            return img.size
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise ItemError("extract", f"image too large: {int(pixels[1]) if pixels else 0:,} pixels "
                        f"(limit {MAX_IMAGE_PIXELS:,} pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _opencv_reason(exc: cv2.error) -> str:
    """OpenCV's exception as one line in words (its text spans lines and names source files)."""
    text = " ".join(str(exc).split())
    if "CV_IO_MAX_IMAGE_PIXELS" in text:
        return f"image too large: over OpenCV's pixel limit ({MAX_IMAGE_PIXELS:,} pixels unless set otherwise)"
    found = re.search(r"error: \(-?\d+:[^)]*\) (.*?)(?: in function '[^']*')?$", text)
    return f"cannot decode image: {found[1] if found else 'corrupt or unsupported image data'}"


@capturing
def read_image(path: Path) -> np.ndarray:
    size = _image_size(path)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ItemError("extract", f"image too large: {size[0]}x{size[1]} (limit {MAX_IMAGE_PIXELS:,} pixels)")
    try:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ItemError("extract", _opencv_reason(exc)) from None
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
        yield Frame(0, 0.0, read_image(item.path))
        return
    frames = _video_frames(item.path, fps, max_frames, tally if tally is not None else {})
    yield from (prefetched(frames, prefetch) if prefetch > 0 else frames)


@capturing
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
    stop = tally.get("stop")  # set when a head start is dropped (tasks.extract_ahead): end here
    while (max_frames is None or kept < max_frames) and not (stop is not None and stop.is_set()):
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
