"""py-feat's model weights: exactly which Hugging Face hub files each chosen model needs,
fetching them, and checking them before any work.

py-feat 2.1.5 loads every weight file through `huggingface_hub.hf_hub_download(repo_id,
filename, cache_dir=<its resources folder>)`. affectflow keeps those files in a hub cache of its
own, `<AFFECTFLOW_MODELS_DIR>/hub` (`models--py-feat--<name>/snapshots/<commit>/<file>` plus
`refs/main`), fetched by `affectflow models pull pyfeat` at a pinned commit and checked
against a pinned sha256. The extractor then points py-feat at that cache and turns the hub off
for the process (`HF_HUB_OFFLINE`), so a run never waits on the network.

Pins come from the hub's own records (commit pages and Git LFS pointers). Two repositories
were not reachable to pin when this was written (`py-feat/pose_mlp_v2`, and the config of
`py-feat/resmasknet`): for them `pull` resolves `main` once and records the commit and sha256
it got in `<hub>/affectflow-pins.json` (trust on first use); every later check holds the files
to that record. `models list` says which pins are which.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import SetupError
from tasks.model_files import file_sha256

PULL_COMMAND = "affectflow models pull pyfeat"
PINS_FILE = "affectflow-pins.json"
ROLES = ("face", "landmark", "au", "emotion", "pose")
# The lightest set that still gives landmarks, pose, AUs and emotions (see `DEFAULT_MODELS` notes
# in the tasks/extractors/pyfeat.py module doc for the measured sizes and speeds).
DEFAULT_MODELS: dict[str, str] = {"face": "retinaface", "landmark": "mobilefacenet", "au": "xgb",
                                  "emotion": "svm", "pose": "pose_mlp"}


@dataclass(frozen=True)
class HubFile:
    """One file py-feat loads: where it lives on the hub and what it must hash to."""

    repo_id: str
    filename: str
    revision: str | None  # pinned commit; None = recorded at first pull (see module doc)
    sha256: str | None  # None = recorded at first pull
    size: int | None
    licence: str

    @property
    def label(self) -> str:
        return f"{self.repo_id}/{self.filename}"


_RETINAFACE = HubFile("py-feat/retinaface_r34", "model.safetensors",
                      "2e4495d934ed359ae8ddc0946d82f85e1e328e52",
                      "f339890a869284bb39dc16ed6f52acc21d74a73d6e419088697e46ee0b54eaf2", 88_606_408, "MIT")
_MOBILEFACENET = HubFile("py-feat/mobilefacenet", "mobilefacenet_model_best.pth.tar",
                         "78ffd5f682cc90e000c18854757071bff86575a9",
                         "b994af026bfddbafc507a6f1c8737a9896bab20ed2b0cfb6ae90b81736970313", 12_281_146, "MIT")
# py-feat tries `xgb_au_classifier_v2.skops` first and falls back to this file when the v2 one is
# not in the cache (its `hf_hub_download_with_fallback`); the v1 file is the one with a pin.
_XGB_AU = HubFile("py-feat/xgb_au", "xgb_au_classifier.skops", "8df261f0f5b89783c1ddf026d7cfda7cb89b455b",
                  "924561c2c6ca2c2bf6ab49324846902ebc9d23b4a260720340b16e78bd8198ac", 145_541_785, "MIT")
_SVM_AU = HubFile("py-feat/svm_au", "svm_au_classifier.skops", "60e5719d12e950935806fe58a7d81306ff920c61",
                  "bd3643e98f469620f1605e90d177750245108ec733b8697991085421e7fb7202", 134_232_302, "MIT")
_SVM_EMO = HubFile("py-feat/svm_emo", "svm_emo_classifier.skops", "e7511bb9cc3a462fbcf857909879e32ee221dac3",
                   "e7451e4ca96cb622e39d8f5a6c69e9dbe20b17c76f0d1aae14fe1789acfa6504", 59_482_492, "MIT")
_RESMASKNET = (
    HubFile("py-feat/resmasknet", "ResMaskNet_Z_resmasking_dropout1_rot30.pth", None,
            "1aa0454662df6c59ab8bc4db80a25be5a109acfda970d32e7593cde2d3aeae68", 551_634_217, "MIT"),
    HubFile("py-feat/resmasknet", "config.json", None, None, None, "MIT"),
)
_POSE_MLP = (
    HubFile("py-feat/pose_mlp_v2", "pose_mlp_v2.safetensors", None, None, None, "see model card"),
    HubFile("py-feat/pose_mlp_v2", "pose_mlp_v2.json", None, None, None, "see model card"),
)

# (role, py-feat model name) -> the files it loads.
REGISTRY: dict[tuple[str, str], tuple[HubFile, ...]] = {
    ("face", "retinaface"): (_RETINAFACE,),
    ("landmark", "mobilefacenet"): (_MOBILEFACENET,),
    ("au", "xgb"): (_XGB_AU,),
    ("au", "svm"): (_SVM_AU,),
    ("emotion", "svm"): (_SVM_EMO,),
    ("emotion", "resmasknet"): _RESMASKNET,
    ("pose", "pose_mlp"): _POSE_MLP,
}


def hub_dir(models_dir: Path) -> Path:
    return Path(models_dir) / "hub"


def required_files(models: Mapping[str, str],
                   registry: Mapping[tuple[str, str], Sequence[HubFile]] = REGISTRY) -> list[HubFile]:
    """The hub files a model choice needs; a model affectflow has no pins for is refused."""
    files: list[HubFile] = []
    for role in ROLES:
        name = models.get(role)
        if name is None:
            raise SetupError(f"py-feat {role} model is required (landmarks, pose, AUs and emotions "
                             f"are all part of the pyfeat extractor's output)")
        if (role, name) not in registry:
            known = sorted(n for r, n in registry if r == role)
            raise SetupError(f"py-feat {role} model {name!r} has no pinned weights; choose one of: "
                             f"{', '.join(known)}")
        files.extend(registry[(role, name)])
    return files


def _repo_dir(hub: Path, repo_id: str) -> Path:
    return hub / ("models--" + repo_id.replace("/", "--"))


def load_pins(hub: Path) -> dict[str, dict[str, object]]:
    """Commits and sha256s recorded at first pull for files without a registry pin."""
    path = hub / PINS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SetupError(f"cannot read {path}: {exc}; delete it and run `{PULL_COMMAND}`") from None


def _pin(spec: HubFile, pins: Mapping[str, Mapping[str, object]]) -> tuple[str | None, str | None]:
    """(revision, sha256) a file is held to: the registry's, else the one recorded at first pull."""
    recorded = pins.get(spec.label, {})
    revision = spec.revision or recorded.get("revision")
    sha256 = spec.sha256 or recorded.get("sha256")
    return (str(revision) if revision else None, str(sha256) if sha256 else None)


def local_path(hub: Path, spec: HubFile, revision: str) -> Path:
    return _repo_dir(hub, spec.repo_id) / "snapshots" / revision / spec.filename


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def _sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class FileStatus:
    spec: HubFile
    state: str  # "present" | "missing" | "corrupt" | "unpinned" (present, no pin recorded)
    path: Path | None
    detail: str = ""


def file_status(hub: Path, spec: HubFile, pins: Mapping[str, Mapping[str, object]]) -> FileStatus:
    """Whether one file is in the cache, where py-feat will look (`refs/main`), with its pin."""
    revision, sha256 = _pin(spec, pins)
    if revision is None:
        return FileStatus(spec, "missing", None, "never pulled")
    path = local_path(hub, spec, revision)
    if not path.is_file():
        return FileStatus(spec, "missing", path)
    ref = _repo_dir(hub, spec.repo_id) / "refs" / "main"
    if not ref.is_file() or ref.read_text().strip() != revision:
        return FileStatus(spec, "missing", path, f"{ref} does not point at {revision}")
    if sha256 is None:
        return FileStatus(spec, "unpinned", path, "no sha256 recorded")
    try:
        actual = _sha256(path)
    except OSError as exc:
        return FileStatus(spec, "corrupt", path, f"cannot read it: {exc.strerror or exc}")
    if actual != sha256:
        return FileStatus(spec, "corrupt", path, f"sha256 {actual}, expected {sha256}")
    return FileStatus(spec, "present", path)


def check_files(models_dir: Path, files: Iterable[HubFile]) -> dict[str, Path]:
    """Verified local paths by label; one SetupError naming every missing or corrupt file.

    Runs before any work: nothing is loaded unless every file hashes to its pin.
    """
    hub = hub_dir(models_dir)
    pins = load_pins(hub)
    statuses = [file_status(hub, spec, pins) for spec in files]
    corrupt = [s for s in statuses if s.state in ("corrupt", "unpinned")]
    if corrupt:
        s = corrupt[0]
        raise SetupError(f"py-feat weight file {s.path} ({s.spec.label}) is corrupt or not the "
                         f"pinned file: {s.detail}; not loaded. Delete it and run `{PULL_COMMAND}`")
    missing = [s.spec.label for s in statuses if s.state == "missing"]
    if missing:
        raise SetupError(f"py-feat weights missing in {hub}: {', '.join(missing)}; "
                         f"fetch them with `{PULL_COMMAND}`")
    return {s.spec.label: s.path for s in statuses if s.path is not None}


def weights_present(models_dir: Path, models: Mapping[str, str] | None = None) -> bool:
    """True when every file of the model choice (default: `DEFAULT_MODELS`) is present and valid.

    This is the question `auto` asks before choosing the pyfeat extractor.
    """
    try:
        check_files(models_dir, required_files(models or DEFAULT_MODELS))
    except SetupError:
        return False
    return True


def status(models_dir: Path, registry: Mapping[tuple[str, str], Sequence[HubFile]] = REGISTRY
           ) -> list[tuple[str, str, FileStatus]]:
    """(role, model, status) for every registered file, for `affectflow models list`."""
    hub = hub_dir(models_dir)
    pins = load_pins(hub)
    return [(role, name, file_status(hub, spec, pins))
            for (role, name), specs in registry.items() for spec in specs]


def pull(models_dir: Path, files: Iterable[HubFile], offline: bool = False) -> list[FileStatus]:
    """Fetch every file not already present and valid; returns the final status of each."""
    hub = hub_dir(models_dir)
    results = []
    for spec in files:
        current = file_status(hub, spec, load_pins(hub))
        if current.state != "present":
            if offline:
                raise SetupError(f"cannot fetch {spec.label}: AFFECTFLOW_OFFLINE is set")
            if current.state in ("corrupt", "unpinned") and current.path is not None:
                current.path.unlink()
            _fetch(hub, spec)
            current = file_status(hub, spec, load_pins(hub))
        if current.state != "present":
            raise SetupError(f"{spec.label} fetched but not usable: {current.detail or current.state}")
        results.append(current)
    return results


def _fetch(hub: Path, spec: HubFile) -> None:
    """Download one file at its pinned commit (or `main`, recording what it got), check it, and
    point `refs/main` at that commit so py-feat's own look-ups find it."""
    from huggingface_hub import hf_hub_download

    pinned_revision, _ = _pin(spec, load_pins(hub))
    try:
        path = Path(hf_hub_download(spec.repo_id, spec.filename, revision=pinned_revision or "main",
                                    cache_dir=hub))
    except Exception as exc:  # hub errors, HTTP errors and OSError all mean "could not fetch"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SetupError(f"could not fetch {spec.label} from the Hugging Face hub: {reason}") from None
    revision = pinned_revision or path.parent.name
    actual = _sha256(path)
    if spec.sha256 is not None and actual != spec.sha256:
        _discard(path)
        raise SetupError(f"downloaded {spec.label} has sha256 {actual}, expected {spec.sha256}; "
                         f"not kept")
    if spec.revision is None or spec.sha256 is None:
        _record_pin(hub, spec, revision, actual)
    ref = _repo_dir(hub, spec.repo_id) / "refs" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(revision)


def _discard(path: Path) -> None:
    target = path.resolve()
    path.unlink(missing_ok=True)
    if target != path:
        target.unlink(missing_ok=True)


def _record_pin(hub: Path, spec: HubFile, revision: str, sha256: str) -> None:
    pins = load_pins(hub)
    pins[spec.label] = {"revision": revision, "sha256": sha256, "size": os.path.getsize(
        local_path(hub, spec, revision))}
    tmp = hub / f".{PINS_FILE}.part"
    tmp.write_text(json.dumps(pins, indent=2, sort_keys=True))
    os.replace(tmp, hub / PINS_FILE)


def install_file(hub: Path, spec: HubFile, source: Path, revision: str) -> Path:
    """Place a file into the hub-cache layout at `revision` (used to install weights copied from
    another machine, and by tests that generate weight files)."""
    path = local_path(hub, spec, revision)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    ref = _repo_dir(hub, spec.repo_id) / "refs" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(revision)
    return path
