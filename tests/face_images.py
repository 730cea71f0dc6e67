"""Real face images for tests: frames of the RAVDESS clips in ../shared written out as JPEG."""

from __future__ import annotations

from pathlib import Path

import cv2

from tests.conftest import SHARED


def write_face_images(folder: Path, count: int, size: tuple[int, int] = (320, 180), every: int = 7) -> list[Path]:
    """`count` JPEGs, every `every`-th frame of the clips in turn, resized to `size`."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for clip in sorted((SHARED / "data" / "ravdess-actor05").glob("*.mp4")):
        cap = cv2.VideoCapture(str(clip))
        index = 0
        try:
            while len(written) < count:
                ok, bgr = cap.read()
                if not ok:
                    break
                if index % every == 0:
                    path = folder / f"{clip.stem}_{index:03d}.jpg"
                    cv2.imwrite(str(path), cv2.resize(bgr, size))
                    written.append(path)
                index += 1
        finally:
            cap.release()
        if len(written) >= count:
            break
    return written
