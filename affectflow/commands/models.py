"""`affectflow models list` / `affectflow models pull pyfeat|mediapipe`: the model weights affectflow
uses, their sizes and licences, whether they are present, and fetching them."""

from __future__ import annotations

import argparse

from affectflow.commands._common import fail
from tasks.errors import SetupError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models", help="list model weights (size, licence, present?) or fetch them",
        description="`list` shows every model file affectflow knows, with its size, licence and "
        "whether it is present and valid in $AFFECTFLOW_MODELS_DIR. `pull pyfeat` fetches the "
        "py-feat files of the default model choice from the Hugging Face hub at pinned commits "
        "(sha256 checked); `pull mediapipe` installs the MediaPipe face landmarker.")
    p.add_argument("action", choices=("list", "pull"))
    p.add_argument("name", nargs="?", choices=("pyfeat", "mediapipe"), help="what to pull")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from affectflow.settings import load_settings

    settings = load_settings()
    try:
        if args.action == "list":
            print_list(settings.models_dir)
            return 0
        if args.name is None:
            return fail("say what to pull: `affectflow models pull pyfeat` or `... pull mediapipe`")
        pull(args.name, settings.models_dir, settings.offline)
    except SetupError as exc:
        return fail(str(exc), 1)
    return 0


def pull(name: str, models_dir, offline: bool) -> None:
    if name == "mediapipe":
        from tasks.model_files import ensure_model_file

        path = ensure_model_file("mediapipe-face-landmarker", models_dir, offline)
        print(f"mediapipe-face-landmarker  present  {path}")
        return
    from tasks import pyfeat_weights as pw

    for status in pw.pull(models_dir, pw.required_files(pw.DEFAULT_MODELS), offline):
        print(f"{status.spec.label}  {status.state}  {status.path}")


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:,.1f} MB"


def print_list(models_dir) -> None:
    from tasks import pyfeat_weights as pw
    from tasks.model_files import BUNDLED_DIR, MODEL_FILES, file_sha256

    print(f"models directory: {models_dir}\n")
    print(f"{'extractor':<10}{'model':<27}{'file':<64}{'size':>10}  {'licence':<16}{'pin':<12}state")
    for spec in MODEL_FILES.values():
        path = models_dir / spec.filename
        state = ("present" if file_sha256(path) == spec.sha256 else "corrupt") if path.is_file() else (
            "bundled (installed on first use)" if spec.bundled and (BUNDLED_DIR / spec.bundled).is_file() else "missing")
        print(f"{'mediapipe':<10}{spec.name:<27}{spec.filename:<64}{_size(spec.size):>10}  "
              f"{spec.licence:<16}{'registry':<12}{state}")
    for role, name, status in pw.status(models_dir):
        spec = status.spec
        default = "*" if pw.DEFAULT_MODELS.get(role) == name else " "
        pin = "registry" if spec.sha256 and spec.revision else "first pull"
        print(f"{'pyfeat':<10}{default}{role + '/' + name:<26}{spec.label:<64}{_size(spec.size):>10}  "
              f"{spec.licence:<16}{pin:<12}{status.state}")
    print("\n* = default py-feat model; fetch with `affectflow models pull pyfeat`")
