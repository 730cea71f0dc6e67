"""Checks a command makes before it starts a flow: cheap, and worded for the person typing.

A mistyped path, a missing labels file, an extractor that cannot run or a Prefect server that
does not answer are reported in one line before Prefect is even imported, so they answer in
well under a second and leave no failed flow run behind in the UI.
"""

from __future__ import annotations

import difflib
import glob
import os
from pathlib import Path

MEDIA_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".jpg", ".jpeg", ".png", ".bmp", ".csv"}


class PreflightError(Exception):
    """The command cannot start; the message is one line for the user."""


def _near(path: Path) -> str:
    """`; did you mean …?` for a missing path whose folder holds a similar name."""
    parent = path.parent if path.parent.is_dir() else None
    if parent is None:
        return ""
    try:
        names = os.listdir(parent)
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return f"; did you mean {parent / close[0]}?" if close else ""


def _has_media(folder: Path) -> bool:
    """Whether any file under `folder` looks like media (stops at the first one)."""
    for _, _, files in os.walk(folder, followlinks=True):
        if any(os.path.splitext(name)[1].lower() in MEDIA_SUFFIXES for name in files):
            return True
    return False


def check_source(source: str) -> None:
    """The source exists and holds something to read (a file, a folder with media, a glob that matches)."""
    if any(ch in source for ch in "*?["):
        if not glob.glob(os.path.expanduser(source), recursive=True):
            raise PreflightError(f"no files match {source!r}")
        return
    path = Path(source).expanduser().absolute()
    if not path.exists() and not path.is_symlink():
        raise PreflightError(f"source not found: {path}{_near(path)}")
    if path.is_dir() and not _has_media(path):
        raise PreflightError(f"no media found in folder {path} (looked for {' '.join(sorted(MEDIA_SUFFIXES))})")


def check_file(what: str, name: str | None) -> None:
    """An input file the command was given exists and is a readable regular file."""
    if name is None:
        return
    path = Path(name).expanduser().absolute()
    if not path.exists():
        raise PreflightError(f"{what} not found: {path}{_near(path)}")
    if path.is_dir():
        raise PreflightError(f"{what} {path} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise PreflightError(f"{what} {path} cannot be read (permission denied)")


def check_manifest(name: str | None) -> None:
    """The labels file exists and is a manifest with a `path` column (its rows are checked in the run)."""
    if name is None:
        return
    check_file("labels file", name)
    from tasks.labels import check_manifest as check

    try:
        check(Path(name).expanduser().absolute())
    except ValueError as exc:
        raise PreflightError(str(exc)) from None


def check_server() -> None:
    """When PREFECT_API_URL is set, the server answers (else every step would retry for minutes)."""
    url = os.environ.get("PREFECT_API_URL", "").strip()
    if not url:
        return
    import urllib.error
    import urllib.request

    try:  # urllib, not httpx: ~0.4 s less of import in every command that only checks (a no-op re-run)
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=3) as answer:  # noqa: S310 - the user's own API URL
            answer.read()
    except urllib.error.HTTPError as exc:  # something answers there, but not a Prefect API
        why = f"HTTP {exc.code} from {url.rstrip('/')}/health"
    except (urllib.error.URLError, OSError) as exc:
        why = type(getattr(exc, "reason", None) or exc).__name__
    except ValueError:
        why = "not a URL, e.g. http://127.0.0.1:4200/api"
    else:
        return
    raise PreflightError(f"the Prefect server at {url} does not answer ({why}); start it "
                         "with `make serve`, or unset PREFECT_API_URL to run without one")


def check_extractor(name: str, source: str) -> None:
    """The extractor this run would use can run (model files, OpenFace's binary, py-feat's weights)."""
    from affectflow.settings import load_settings
    from tasks.errors import SetupError
    from tasks.extractors import check_ready, resolve_auto

    settings = load_settings()
    chosen = ["openface-csv", resolve_auto("auto", {"video"}, settings.models_dir)] if name == "auto" else [name]
    try:
        for extractor in chosen:
            check_ready(extractor, settings.models_dir, settings.offline)
    except SetupError as exc:
        raise PreflightError(str(exc)) from None
