"""Generate corpora of broken media and CSVs mixed with good ones, for reliability tests.

Each broken item is written with the reason the pipeline must give for it (a regex), so a test
can check that every bad item is quarantined for the right reason.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def media_corpus(root: Path, feat_data: Path, copies: int = 20, seed: int = 0) -> tuple[list[Path], dict[Path, str]]:
    """Good media (which must load) and broken media with the reason each must get."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    good = [root / "good_face.mp4", root / "good_noface.mp4", root / "good.jpg",
            root / "gray16.png", root / "rgba.png", root / "gray.png"]
    shutil.copy(feat_data / "single_face.mp4", good[0])
    shutil.copy(feat_data / "no_face.mp4", good[1])
    shutil.copy(feat_data / "single_face.jpg", good[2])
    face = cv2.imread(str(feat_data / "single_face.jpg"))
    cv2.imwrite(str(good[3]), (cv2.cvtColor(face, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257))
    cv2.imwrite(str(good[4]), cv2.cvtColor(face, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(good[5]), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    video = (feat_data / "single_face.mp4").read_bytes()
    jpeg = (feat_data / "single_face.jpg").read_bytes()
    bad: dict[Path, str] = {}
    for i in range(copies):
        bad[_write(root / f"zero_{i}.mp4", b"")] = r"^empty file \(0 bytes\)$"
        cut = rng.randint(200, len(video) // 2)
        bad[_write(root / f"truncated_{i}.mp4", video[:cut])] = r"^(cannot open video|no frame could be decoded)"
        container = rng.choice([b"<html><body>not a video</body></html>", b'{"video": false}', b"%PDF-1.4\n" * 20])
        bad[_write(root / f"container_{i}.{rng.choice(['mp4', 'avi', 'mkv', 'webm'])}", container)] = r"^cannot open video"
        bad[_write(root / f"random_{i}.mov", rng.randbytes(rng.randint(1, 50_000)))] = r"^cannot open video"
        bad[_write(root / f"random_{i}.jpg", rng.randbytes(rng.randint(1, 20_000)))] = r"^cannot decode image"
        bad[_write(root / f"cut_{i}.jpg", jpeg[: rng.randint(10, 600)])] = r"^cannot decode image"
    for i in range(copies // 2):
        bad[_write(root / f"huge_{i}.png", _png_header_only(50_000 + i, 40_000))] = r"^image too large"
        name = os.fsdecode(b"caf\xe9_" + str(i).encode() + b".mp4")  # Latin-1 bytes: not UTF-8
        bad[_write(root / name, video)] = r"^file name is not valid UTF-8"
        a, b = root / f"loop_{i}_a.mp4", root / f"loop_{i}_b.mp4"
        os.symlink(b, a)
        os.symlink(a, b)
        bad[a] = bad[b] = r"^cannot read file: Too many levels of symbolic links"
    return good, bad


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def csv_corpus(root: Path, openface_dir: Path, copies: int = 20) -> tuple[list[Path], dict[Path, str]]:
    """Good OpenFace CSVs and broken ones with the reason each must get."""
    root.mkdir(parents=True)
    good = []
    for src in sorted(openface_dir.glob("*.csv")):
        shutil.copy(src, root / src.name)
        good.append(root / src.name)
    lines = (openface_dir / "single_face.csv").read_text().splitlines()
    header = lines[0].split(",")
    bad: dict[Path, str] = {}
    for i in range(copies):
        garbled = list(header)
        garbled[10 + i] = f" col{i}"
        bad[_write(root / f"garbled_{i}.csv", (",".join(garbled) + "\n" + "\n".join(lines[1:])).encode())] = r"renamed\?"
        dropped = [h for j, h in enumerate(header) if j != 3]  # no confidence
        rows = [",".join(v for j, v in enumerate(r.split(",")) if j != 3) for r in lines[1:]]
        bad[_write(root / f"missing_{i}.csv", (",".join(dropped) + "\n" + "\n".join(rows)).encode())] = r"missing required columns"
        for tag, value, reason in (("nan", "NaN", r"missing value \(empty or NaN\)"),
                                   ("inf", "inf", r"infinite values"), ("text", "n/a?", r"non-numeric value")):
            row = lines[2 + i].split(",")
            row[20 + i] = value
            body = [lines[0], lines[1], ",".join(row), *lines[3:]]
            bad[_write(root / f"{tag}_{i}.csv", "\n".join(body).encode())] = reason
    for i in range(copies // 2):
        bad[_write(root / f"header_only_{i}.csv", (lines[0] + "\n").encode())] = r"header but no rows"
        bad[_write(root / f"binary_{i}.csv", bytes([0xFF, 0xFE, 0x00, i]) * 100)] = r"not a text CSV|not an OpenFace CSV"
    return good, bad
