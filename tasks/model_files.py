"""Model weights affectflow may need: where they come from, what they must hash to, and
getting them into the models directory.

A file is used only when its sha256 matches the registry: a corrupt or substituted file is
refused, never loaded. A missing file is downloaded from its official URL (to a temporary
file, checked, then renamed into place) unless affectflow runs offline; offline, or when the
download fails, the run stops at once with one line naming the file, the URL and the folder.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tasks.errors import SetupError

DOWNLOAD_TIMEOUT_S = 60
BUNDLED_DIR = Path(str(importlib.resources.files("affectflow"))) / "resources" / "models"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelFile:
    name: str
    filename: str
    url: str
    sha256: str
    size: int
    licence: str
    bundled: str | None = None  # file name under affectflow/resources/models, when shipped


MODEL_FILES: dict[str, ModelFile] = {
    "mediapipe-face-landmarker": ModelFile(
        name="mediapipe-face-landmarker",
        filename="face_landmarker.task",
        url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
        sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
        size=3_758_596,
        licence="Apache-2.0",
        bundled="face_landmarker.task",
    ),
}


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


MODEL_FILE_MODE = 0o644  # readable by everyone sharing a models folder (a temporary file is 0600)


def ensure_model_file(name: str, models_dir: Path, offline: bool) -> Path:
    """The verified path of model file `name` in `models_dir`, downloading it when allowed."""
    spec = MODEL_FILES[name]
    path = Path(models_dir) / spec.filename
    if path.is_file():
        _verify(spec, path)
        return path
    if _copy_bundled(spec, path):
        return path
    if offline:
        raise SetupError(f"{_missing(spec, models_dir)} (offline: AFFECTFLOW_OFFLINE is set)")
    _download(spec, path)
    return path


def _copy_bundled(spec: ModelFile, path: Path) -> bool:
    """Install the copy shipped inside the package (checked like a download), if there is one."""
    if spec.bundled is None:
        return False
    source = BUNDLED_DIR / spec.bundled
    if not source.is_file():
        return False
    _verify(spec, source)
    with _installing(spec, path, ".bundled.part") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out)
    return True


@contextmanager
def _installing(spec: ModelFile, path: Path, suffix: str) -> Iterator[BinaryIO]:
    """A temporary file of its own beside `path` (two runs starting at once may both install
    it), open for writing; when the block ends without an error it becomes `path`, readable by
    everyone sharing the folder. Otherwise it is removed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise SetupError(f"{_missing(spec, path.parent)} (cannot write there: {exc.strerror or exc})") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.chmod(tmp, MODEL_FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _missing(spec: ModelFile, models_dir: Path) -> str:
    return (f"model file {spec.filename} is missing: download it from {spec.url} "
            f"(sha256 {spec.sha256}) and put it in {models_dir}")


def _verify(spec: ModelFile, path: Path) -> None:
    try:
        actual = file_sha256(path)
    except OSError as exc:
        raise SetupError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if actual != spec.sha256:
        raise SetupError(f"model file {path} is corrupt or not the expected file: sha256 {actual}, "
                         f"expected {spec.sha256}; delete it, or replace it with {spec.url}")


def _download(spec: ModelFile, path: Path) -> None:
    """Fetch to a temporary file beside `path`, check size and sha256, then rename into place."""
    with _installing(spec, path, ".part") as out:
        digest = _fetch_into(spec, out, path.parent)
        if digest != spec.sha256:
            raise SetupError(f"downloaded {spec.filename} from {spec.url} has sha256 {digest}, "
                             f"expected {spec.sha256}; not used. {_missing(spec, path.parent)}")


def _fetch_into(spec: ModelFile, out: BinaryIO, models_dir: Path) -> str:
    """Stream `spec.url` into `out`, returning the sha256; refuse more bytes than expected."""
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(spec.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > spec.size:
                    raise SetupError(f"download of {spec.filename} from {spec.url} is larger than "
                                     f"the expected {spec.size:,} bytes; not used")
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SetupError(f"{_missing(spec, models_dir)} (download failed: {reason})") from None
    return digest.hexdigest()
