"""Model files: verified when present, refused when wrong, downloaded from a real local HTTP
server (no network mocks), and one clear message when offline."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasks.errors import SetupError
from tasks.model_files import MODEL_FILES, ensure_model_file, file_sha256

NAME = "mediapipe-face-landmarker"
SPEC = MODEL_FILES[NAME]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        return None


@pytest.fixture()
def http_root(tmp_path: Path):
    """A real HTTP server on 127.0.0.1 serving `root`; yields (root, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _serve(root: Path, base: str, payload: bytes, monkeypatch, sha: str | None = None) -> None:
    (root / "weights.task").write_bytes(payload)
    spec = dataclasses.replace(SPEC, url=f"{base}/weights.task", size=len(payload),
                               sha256=sha or hashlib.sha256(payload).hexdigest(), bundled=None)
    monkeypatch.setitem(MODEL_FILES, NAME, spec)


def test_present_file_is_verified_and_used(mediapipe_models_dir: Path):
    path = ensure_model_file(NAME, mediapipe_models_dir, offline=True)
    assert path == mediapipe_models_dir / "face_landmarker.task"
    assert path.stat().st_size == SPEC.size


def test_wrong_file_is_refused_with_both_hashes(tmp_path: Path):
    bad = tmp_path / SPEC.filename
    bad.write_bytes(b"not a model")
    with pytest.raises(SetupError) as err:
        ensure_model_file(NAME, tmp_path, offline=False)
    message = str(err.value)
    assert str(bad) in message and SPEC.sha256 in message and file_sha256(bad) in message
    assert bad.read_bytes() == b"not a model"  # left for the user to inspect, never loaded


def test_bundled_copy_is_installed_offline(tmp_path: Path):
    path = ensure_model_file(NAME, tmp_path / "models", offline=True)
    assert file_sha256(path) == SPEC.sha256


def test_runs_starting_together_all_install_the_bundled_copy(tmp_path: Path):
    models, start, errors = tmp_path / "models", threading.Barrier(8), []

    def install() -> None:
        start.wait()
        try:
            ensure_model_file(NAME, models, offline=True)
        except Exception as exc:  # noqa: BLE001 - collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=install) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert file_sha256(models / SPEC.filename) == SPEC.sha256
    assert [p.name for p in models.iterdir()] == [SPEC.filename]  # no temporary file left
    assert (models / SPEC.filename).stat().st_mode & 0o777 == 0o644  # others sharing the folder can read it


def test_offline_and_missing_names_file_url_and_folder(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(MODEL_FILES, NAME, dataclasses.replace(SPEC, bundled=None))
    with pytest.raises(SetupError) as err:
        ensure_model_file(NAME, tmp_path / "models", offline=True)
    message = str(err.value)
    assert SPEC.filename in message and SPEC.url in message and str(tmp_path / "models") in message
    assert "\n" not in message
    assert not (tmp_path / "models").exists()


def test_download_checks_sha_and_renames_into_place(tmp_path: Path, http_root, monkeypatch):
    root, base = http_root
    payload = bytes(range(256)) * 5000
    _serve(root, base, payload, monkeypatch)
    models = tmp_path / "models"
    path = ensure_model_file(NAME, models, offline=False)
    assert path == models / SPEC.filename and path.read_bytes() == payload
    assert sorted(p.name for p in models.iterdir()) == [SPEC.filename]  # no temporary file left
    assert ensure_model_file(NAME, models, offline=False) == path  # second call: verified, kept


def test_download_with_wrong_sha_is_not_installed(tmp_path: Path, http_root, monkeypatch):
    root, base = http_root
    _serve(root, base, b"tampered bytes", monkeypatch, sha="0" * 64)
    models = tmp_path / "models"
    with pytest.raises(SetupError, match="expected 0{64}"):
        ensure_model_file(NAME, models, offline=False)
    assert list(models.iterdir()) == []


def test_failed_download_names_url_and_folder(tmp_path: Path, http_root, monkeypatch):
    root, base = http_root
    _serve(root, base, b"x", monkeypatch)
    (root / "weights.task").unlink()  # the server answers 404
    with pytest.raises(SetupError) as err:
        ensure_model_file(NAME, tmp_path / "models", offline=False)
    message = str(err.value)
    assert f"{base}/weights.task" in message and str(tmp_path / "models") in message
    assert "download failed" in message
