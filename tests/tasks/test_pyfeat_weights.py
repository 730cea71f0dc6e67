"""py-feat weight registry: pins, the hub-cache layout, the check that runs before any work
(missing files named with the pull command, corrupt files refused), and pull without network."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tasks import pyfeat_weights as pw
from tasks.errors import SetupError
from tests import pyfeat_fake_weights


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("pyfeat_weights")
    return root / "models", pyfeat_fake_weights.build(root / "models", "none", cache_dir=root / "gen")


@pytest.fixture()
def models_copy(generated, tmp_path: Path):
    models_dir, registry = generated
    target = tmp_path / "models"
    shutil.copytree(models_dir / "hub", target / "hub")
    return target, registry


def _files(registry):
    return [spec for specs in registry.values() for spec in specs]


def test_registry_pins_are_well_formed():
    for specs in pw.REGISTRY.values():
        for spec in specs:
            assert spec.revision is None or re.fullmatch(r"[0-9a-f]{40}", spec.revision), spec
            assert spec.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", spec.sha256), spec
            assert spec.licence
    assert all((role, name) in pw.REGISTRY for role, name in pw.DEFAULT_MODELS.items())


def test_default_choice_needs_one_file_set_per_role():
    labels = [f.label for f in pw.required_files(pw.DEFAULT_MODELS)]
    assert "py-feat/retinaface_r34/model.safetensors" in labels
    assert "py-feat/pose_mlp_v2/pose_mlp_v2.safetensors" in labels
    assert len(labels) == len(set(labels)) == 6


def test_a_model_without_pins_or_a_missing_role_is_refused():
    with pytest.raises(SetupError, match="no pinned weights"):
        pw.required_files({**pw.DEFAULT_MODELS, "landmark": "pfld"})
    with pytest.raises(SetupError, match="pose model is required"):
        pw.required_files({k: v for k, v in pw.DEFAULT_MODELS.items() if k != "pose"})


def test_missing_files_are_all_named_with_the_command_that_fetches_them(tmp_path):
    with pytest.raises(SetupError) as err:
        pw.check_files(tmp_path, pw.required_files(pw.DEFAULT_MODELS))
    message = str(err.value)
    for label in ("py-feat/retinaface_r34/model.safetensors", "py-feat/xgb_au/xgb_au_classifier.skops",
                  "py-feat/pose_mlp_v2/pose_mlp_v2.json"):
        assert label in message
    assert "`affectflow models pull pyfeat`" in message
    assert pw.weights_present(tmp_path) is False


def test_generated_files_check_out_in_the_hub_layout(models_copy):
    models_dir, registry = models_copy
    paths = pw.check_files(models_dir, _files(registry))
    path = paths["py-feat/retinaface_r34/model.safetensors"]
    assert path.relative_to(models_dir / "hub").parts[:3] == (
        "models--py-feat--retinaface_r34", "snapshots", pyfeat_fake_weights.FAKE_REVISION)


def test_a_corrupt_file_is_refused_by_name(models_copy):
    models_dir, registry = models_copy
    spec = registry[("landmark", "mobilefacenet")][0]
    path = pw.local_path(pw.hub_dir(models_dir), spec, spec.revision)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SetupError) as err:
        pw.check_files(models_dir, _files(registry))
    assert str(path) in str(err.value) and "not loaded" in str(err.value)


def test_pull_keeps_valid_files_without_contacting_the_hub(models_copy):
    models_dir, registry = models_copy
    statuses = pw.pull(models_dir, _files(registry), offline=True)
    assert {s.state for s in statuses} == {"present"}


def test_pull_offline_fails_at_once_naming_the_file(tmp_path):
    with pytest.raises(SetupError, match="cannot fetch py-feat/retinaface_r34/model.safetensors"):
        pw.pull(tmp_path, pw.required_files(pw.DEFAULT_MODELS), offline=True)


def test_first_pull_pin_is_recorded_and_then_enforced(models_copy):
    models_dir, registry = models_copy
    generated = registry[("pose", "pose_mlp")][1]
    unpinned = pw.HubFile(generated.repo_id, generated.filename, None, None, None, "test")
    hub = pw.hub_dir(models_dir)
    assert pw.file_status(hub, unpinned, pw.load_pins(hub)).state == "missing"
    pw._record_pin(hub, unpinned, generated.revision, generated.sha256)
    status = pw.file_status(hub, unpinned, pw.load_pins(hub))
    assert status.state == "present"
    status.path.write_text("{}")
    assert pw.file_status(hub, unpinned, pw.load_pins(hub)).state == "corrupt"
