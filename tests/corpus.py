"""Generate corpora of broken media, manifests and CSVs mixed with good ones, for reliability tests.

Each broken item is written with the reason the pipeline must give for it (a regex) and each good
one with the frame count it must load with, so a test can check both. Every item also has a kind
(`Corpus.kinds`), so a test can say how varied the corpus is. Items are tiny (a few frames at
most, headers instead of whole images) so hundreds run in `make test` in about two minutes.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np


@dataclass
class Corpus:
    good: dict[Path, int] = field(default_factory=dict)  # path -> frames it loads with
    bad: dict[Path, str] = field(default_factory=dict)  # path -> regex its quarantine reason matches
    kinds: dict[Path, str] = field(default_factory=dict)  # path -> what kind of item it is
    manifest: Path | None = None  # labels CSV for the media run
    labels: dict[Path, dict] = field(default_factory=dict)  # path -> labels a good item gets
    no_copy: set[Path] = field(default_factory=set)  # bad items that are not part of the source

    def add_good(self, kind: str, path: Path, frames: int) -> Path:
        self.good[path], self.kinds[path] = frames, kind
        return path

    def add_bad(self, kind: str, path: Path, reason: str) -> Path:
        self.bad[path], self.kinds[path] = reason, kind
        return path


def _chunk(tag: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF if crc is None else crc
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def image_header(fmt: str, width: int, height: int) -> bytes:
    """The header of an image claiming `width` x `height` pixels, followed by a few bytes of data:
    a decompression bomb in a format OpenCV decodes (whatever the file's name says)."""
    if fmt == "png":
        return _png_header_only(width, height)
    headers = {
        "hdr": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y %d +X %d\n" % (height, width) + b"\x02\x02\x2a\xf8",
        "gif": b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff\x3b",
        "pam": b"P7\nWIDTH %d\nHEIGHT %d\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n" % (width, height),
        "pfm": b"PF\n%d %d\n-1.0\n" % (width, height),
        "ppm": b"P6\n# comment\n%d %d\n255\n" % (width, height),
        "bmp": b"BM" + bytes(12) + struct.pack("<Iii", 40, width, -height),
        "ras": b"\x59\xa6\x6a\x95" + struct.pack(">IIIIIII", width, height, 24, 0, 1, 0, 0),
    }
    return headers[fmt] + bytes(64)


def _with_bad_text_chunk(png: bytes) -> bytes:
    """A PNG with an ancillary text chunk whose CRC is wrong: libpng warns on stderr, decodes."""
    end_of_ihdr = 8 + 25
    return png[:end_of_ihdr] + _chunk(b"tEXt", b"Comment\0hello", crc=0) + png[end_of_ihdr:]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _encoded(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok, ext
    return data.tobytes()


def media_corpus(root: Path, feat_data: Path, copies: int = 12, seed: int = 0) -> Corpus:
    """Good media (which must load) and broken media with the reason each must get, plus a
    labels manifest (`Corpus.manifest`) with good and hostile rows."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    corpus = Corpus()
    _good_media(corpus, root, feat_data)
    video = (feat_data / "single_face.mp4").read_bytes()
    jpeg = (feat_data / "single_face.jpg").read_bytes()
    for i in range(copies):
        corpus.add_bad("zero-bytes", _write(root / f"zero_{i}.mp4", b""), r"^empty file \(0 bytes\)$")
        cut = rng.randint(200, len(video) // 2)
        corpus.add_bad("truncated-video", _write(root / f"truncated_{i}.mp4", video[:cut]),
                       r"^(cannot open video|no frame could be decoded)")
        container = rng.choice([b"<html><body>not a video</body></html>", b'{"video": false}', b"%PDF-1.4\n" * 20])
        ext = rng.choice(["mp4", "avi", "mkv", "webm"])
        corpus.add_bad("wrong-container", _write(root / f"container_{i}.{ext}", container), r"^cannot open video")
        corpus.add_bad("random-video", _write(root / f"random_{i}.mov", rng.randbytes(rng.randint(1, 50_000))),
                       r"^cannot open video")
        corpus.add_bad("random-image", _write(root / f"random_{i}.jpg", rng.randbytes(rng.randint(1, 20_000))),
                       r"^cannot decode image")
        corpus.add_bad("cut-image", _write(root / f"cut_{i}.jpg", jpeg[: rng.randint(10, 600)]), r"^cannot decode image")
    for i in range(copies // 2):
        _odd_files(corpus, root, video, i)
    _hostile_manifest(corpus, root, copies // 2)
    return corpus


def _good_media(corpus: Corpus, root: Path, feat_data: Path) -> None:
    """Videos with and without a face, and still images in every shape and format OpenCV reads
    by their bytes: 16-bit, RGBA, grey PNG, Radiance HDR and GIF under image names, a PNG libpng
    warns about."""
    shutil.copy(feat_data / "single_face.mp4", corpus.add_good("video", root / "good_face.mp4", 72))
    shutil.copy(feat_data / "no_face.mp4", corpus.add_good("video-no-face", root / "good_noface.mp4", 95))
    shutil.copy(feat_data / "single_face.jpg", corpus.add_good("jpeg", root / "good.jpg", 1))
    face = cv2.resize(cv2.imread(str(feat_data / "single_face.jpg")), (286, 281))
    gray = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    images = {
        ("png-16-bit", "gray16.png"): _encoded(gray.astype(np.uint16) * 257, ".png"),
        ("png-rgba", "rgba.png"): _encoded(cv2.cvtColor(face, cv2.COLOR_BGR2BGRA), ".png"),
        ("png-grey", "gray.png"): _encoded(gray, ".png"),
        ("hdr-as-jpg", "radiance.jpg"): _encoded(face.astype(np.float32) / 255, ".hdr"),
        ("gif-as-png", "animated.png"): _encoded(face, ".gif"),
        ("png-libpng-warning", "warned.png"): _with_bad_text_chunk(_encoded(face, ".png")),
    }
    for (kind, name), data in images.items():
        _write(corpus.add_good(kind, root / name, 1), data)


def _odd_files(corpus: Corpus, root: Path, video: bytes, i: int) -> None:
    """Things that are not plain media files: bombs, FIFOs, device links, odd names, bad links."""
    corpus.add_bad("png-bomb", _write(root / f"huge_{i}.png", _png_header_only(50_000 + i, 40_000)), r"^image too large")
    corpus.add_bad("hdr-bomb-as-jpg", _write(root / f"hdr_bomb_{i}.jpg", image_header("hdr", 11000 + i, 10000)),
                   rf"^image too large: {11000 + i}x10000 \(limit 100,000,000 pixels\)$")
    corpus.add_bad("gif-65535-squared", _write(root / f"gif_bomb_{i}.png", image_header("gif", 65535, 65535 - i)),
                   rf"^image too large: 65535x{65535 - i} \(limit 100,000,000 pixels\)$")
    fmt = ("pam", "pfm", "ppm", "bmp", "ras")[i % 5]
    corpus.add_bad("other-format-bomb", _write(root / f"{fmt}_bomb_{i}.bmp", image_header(fmt, 30000, 20000 + i)),
                   rf"^image too large: 30000x{20000 + i} ")
    name = os.fsdecode(b"caf\xe9_" + str(i).encode() + b".mp4")  # Latin-1 bytes: not UTF-8
    corpus.add_bad("name-not-utf8", _write(root / name, video), r"^file name is not valid UTF-8")
    a, b = root / f"loop_{i}_a.mp4", root / f"loop_{i}_b.mp4"
    os.symlink(b, a)
    os.symlink(a, b)
    for link in (a, b):
        corpus.add_bad("symlink-loop", link, r"^cannot read file: Too many levels of symbolic links")
    fifo = root / f"fifo_{i}.mp4"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    corpus.add_bad("fifo", fifo, r"^not a regular file \(a FIFO\)$")
    device = root / f"devzero_{i}.{'mp4' if i % 2 else 'jpg'}"
    os.symlink("/dev/zero", device)  # endless zeros, 0 bytes by its size
    corpus.add_bad("link-to-dev-zero", device, r"^not a regular file \(a character device\)$")
    os.symlink(root / f"gone_{i}.mp4", root / f"dangling_{i}.mp4")
    corpus.add_bad("dangling-link", root / f"dangling_{i}.mp4", r"^cannot read file: No such file or directory$")
    outside = root.parent / "outside" / f"secret_{i}.txt"
    outside.parent.mkdir(exist_ok=True)
    outside.write_text(f"not part of the source {i}\n")
    os.symlink(outside, root / f"outside_link_{i}.jpg")
    corpus.add_bad("link-out-of-the-source", root / f"outside_link_{i}.jpg", r"^cannot decode image")
    corpus.no_copy.add(root / f"outside_link_{i}.jpg")


def _hostile_manifest(corpus: Corpus, root: Path, copies: int) -> None:
    """labels.csv in the media folder: good rows, and rows that must be refused one by one."""
    rows = ["path,emotion,valence,arousal,stress"]
    tile = np.zeros((48, 64, 3), np.uint8)

    def image(name: str, n: int) -> Path:
        tile[0, 0] = (n % 256, n // 256 % 256, 7)  # distinct bytes: every item its own content
        return _write(root / name, _encoded(tile, ".png"))

    refused = {"label-out-of-range": (",7,,", r"line \d+: valence 7 out of range \(must be a number in \[0, 3\]\)$"),
               "label-stress-not-allowed": (",,,2", r"line \d+: stress 2 is not one of 0, 1$"),
               "label-not-a-number": (",abc,,", r"line \d+: valence 'abc' is not a number$"),
               "label-unknown-emotion": ("bored,,,", r"line \d+: unknown emotion 'bored'")}
    for i in range(copies):
        ok = image(f"label_ok_{i}.png", i)
        rows.append(f"{ok.name},happy,,,1.0")  # "1.0" is a valid stress 1
        corpus.add_good("manifest-label", ok, 1)
        corpus.labels[ok] = {"emotion": "happy", "stress": 1, "label_source": "manifest"}
        for n, (kind, (values, reason)) in enumerate(refused.items()):
            path = image(f"{kind}_{i}.png", 1000 + 10 * i + n)
            rows.append(f"{path.name},{values}" if values[0] != "," else f"{path.name},happy{values}")
            corpus.add_bad(kind, path, reason)
        twice = image(f"label_conflict_{i}.png", 2000 + i)
        rows += [f"{twice.name},happy,,,", f"{twice.name},sad,,,"]
        corpus.add_bad("label-conflict", twice, r"line \d+: labels for 'label_conflict_\d+\.png' conflict with line \d+")
        rows.append(f"missing_{i}.png,happy,,,")
        corpus.add_bad("label-file-missing", root / f"missing_{i}.png", r"line \d+: file not found$")
        climb = "../" * 60 + "etc/hostname" if i == 0 else f"../outside/secret_{i}.txt"  # beside the media folder
        rows.append(f"{climb},zzz,,,")
        target = Path("/etc/hostname") if i == 0 else (root.parent / "outside" / f"secret_{i}.txt")
        corpus.add_bad("manifest-path-outside", target, r"is outside the manifest's folder and the source; refused$")
        corpus.no_copy.add(target)
    rows.append("/etc/os-release,x,,,")
    corpus.add_bad("manifest-absolute-path", Path("/etc/os-release"), r"is outside the manifest's folder")
    corpus.no_copy.add(Path("/etc/os-release"))
    corpus.manifest = root / "labels.csv"
    corpus.manifest.write_text("\n".join(rows) + "\n")


def csv_corpus(root: Path, openface_dir: Path, copies: int = 12) -> Corpus:
    """Good OpenFace CSVs (as written, and with a UTF-8 byte-order mark) and broken ones with the
    reason each must get."""
    root.mkdir(parents=True)
    corpus = Corpus()
    for src in sorted(openface_dir.glob("*.csv")):
        rows = src.read_bytes().count(b"\n") - 1
        shutil.copy(src, corpus.add_good("openface-csv", root / src.name, rows))
        _write(corpus.add_good("openface-csv-bom", root / f"bom_{src.name}", rows), b"\xef\xbb\xbf" + src.read_bytes())
    lines = (openface_dir / "single_face.csv").read_text().splitlines()
    header = lines[0].split(",")
    for i in range(copies):
        garbled = list(header)
        garbled[10 + i] = f" col{i}"
        corpus.add_bad("renamed-column", _write(root / f"garbled_{i}.csv", (",".join(garbled) + "\n" + "\n".join(lines[1:])).encode()),
                       r"renamed\?")
        dropped = [h for j, h in enumerate(header) if j != 3]  # no confidence
        rows = [",".join(v for j, v in enumerate(r.split(",")) if j != 3) for r in lines[1:]]
        corpus.add_bad("missing-column", _write(root / f"missing_{i}.csv", (",".join(dropped) + "\n" + "\n".join(rows)).encode()),
                       r"missing required columns")
        for tag, value, reason in (("nan", "NaN", r"missing value \(empty or NaN\)"),
                                   ("inf", "inf", r"infinite values"), ("text", "n/a?", r"non-numeric value")):
            corpus.add_bad(f"value-{tag}", _write(root / f"{tag}_{i}.csv", _edited(lines, 2 + i, 20 + i, value)), reason)
    for i in range(copies // 2):
        corpus.add_bad("header-only", _write(root / f"header_only_{i}.csv", (lines[0] + "\n").encode()), r"header but no rows")
        corpus.add_bad("binary-csv", _write(root / f"binary_{i}.csv", bytes([0xFF, 0xFE, 0x00, i]) * 100),
                       r"not a text CSV|not an OpenFace CSV")
        _bad_keys(corpus, root, lines, i)
    return corpus


def _edited(lines: list[str], row: int, column: int, value: str) -> bytes:
    """The CSV `lines` with one cell replaced."""
    cells = lines[row].split(",")
    cells[column] = value
    return "\n".join([*lines[:row], ",".join(cells), *lines[row + 1:]]).encode()


def _bad_keys(corpus: Corpus, root: Path, lines: list[str], i: int) -> None:
    """Key columns that would wrap, truncate or repeat if cast without the contract's check."""
    line = 3 + i  # 1-based line of the edited data row (the header is line 1)
    repeated = [*lines[: line - 1], lines[line - 2], *lines[line - 1:]]  # a data row written twice
    corpus.add_bad("repeated-frame", _write(root / f"repeated_{i}.csv", "\n".join(repeated).encode()),
                   rf"^line {line}: frame {line - 2}, face_id 0 repeats line {line - 1} ")
    corpus.add_bad("fractional-frame", _write(root / f"fractional_{i}.csv", _edited(lines, line - 1, 0, f"{line - 2}.5")),
                   rf"^line {line}: frame {line - 2}\.5 is not an integer$")
    corpus.add_bad("frame-out-of-int32", _write(root / f"frame_range_{i}.csv", _edited(lines, line - 1, 0, str(3_000_000_000 + i))),
                   rf"^line {line}: frame {3_000_000_000 + i} out of range$")
    corpus.add_bad("face-id-out-of-int16", _write(root / f"face_range_{i}.csv", _edited(lines, line - 1, 1, str(65537 + i))),
                   rf"^line {line}: face_id {65537 + i} out of range$")
