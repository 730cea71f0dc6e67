"""Generated py-feat 2.1.5 weight files, in the exact formats and shapes py-feat loads, laid out as
a Hugging Face hub cache — for tests and benchmarks where the real weights cannot be fetched.

What py-feat loads (feat/detector.py, feat/face_detectors/Retinaface/Retinaface_test.py,
feat/utils/face_pose_mlp.py) and what is built here:
- `py-feat/retinaface_r34/model.safetensors`: `RetinaFace(RETINAFACE_R34_CFG).state_dict()`,
  loaded with `strict=True`.
- `py-feat/mobilefacenet/mobilefacenet_model_best.pth.tar`: `torch.save({"state_dict": ...})`
  of `MobileFaceNet([112, 112], 136)`, read with `torch.load(weights_only=True)["state_dict"]`.
- `py-feat/xgb_au/xgb_au_classifier.skops`: a skops dump of py-feat's own `XGBClassifier` holding
  fitted `StandardScaler`/`PCA` pairs (upper, lower, full face HOG) and 20 `xgboost.XGBClassifier`s.
- `py-feat/svm_emo/svm_emo_classifier.skops`: a skops dump of `EmoSVMClassifier` with a scaler, a
  PCA and 7 scikit-learn SVMs (one per emotion, py-feat's keys `anger … neutral`).
- `py-feat/pose_mlp_v2/pose_mlp_v2.safetensors` + `.json`: `PoseMLP` weights and its metadata.
`build_alternatives` adds the other candidates `Detectorv1` accepts, the same way: landmark
`mobilenet` (`MobileNet_GDConv`) and `pfld` (`PFLDInference`), AU `svm` (`SVMClassifier` with
LinearSVCs), emotion `resmasknet` (`ResMasking` + its `config.json`), face `img2pose`
(`FasterDoFRCNN` on a ResNet-18 FPN + a `config.json` from py-feat's own img2pose settings).

Weights are random (seeded), so outputs are meaningless: tests built on them check plumbing,
never accuracy. Compute is the same as with real weights, so they serve benchmarks.

The face detector's heads are set so that what it finds is known (the rest of the network stays
random): profile `one` finds exactly one face per frame (boxes large enough that non-maximum
suppression keeps one), `grid` finds the same few faces on every frame (fixed anchor boxes, some
at the frame edge), `none` finds nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tasks.pyfeat_weights import HubFile, hub_dir, install_file

FAKE_REVISION = "0" * 40
PROFILES = ("one", "grid", "none")
HOG_FEATURES = 5408  # py-feat's HOG vector for a 112x112 face crop
N_LANDMARK_FEATURES = 136
PCA_COMPONENTS = 64
EMOTION_KEYS = ("anger", "disgust", "fear", "happ", "sad", "sur", "neutral")
AU_KEYS = ("AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU11", "AU12", "AU14", "AU15",
           "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU28", "AU43")


def build(models_dir: Path, profile: str = "one", seed: int = 0,
          cache_dir: Path | None = None) -> dict[tuple[str, str], tuple[HubFile, ...]]:
    """Generate the default model set into `models_dir`'s hub cache; returns its registry.

    `cache_dir` keeps generated files between calls (the AU/emotion heads take seconds to fit).
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}")
    source = Path(cache_dir or models_dir / "generated")
    source.mkdir(parents=True, exist_ok=True)
    makers = {
        ("face", "retinaface"): [("py-feat/retinaface_r34", "model.safetensors",
                                  lambda p: _retinaface(p, profile, seed))],
        ("landmark", "mobilefacenet"): [("py-feat/mobilefacenet", "mobilefacenet_model_best.pth.tar",
                                         lambda p: _mobilefacenet(p, seed))],
        ("au", "xgb"): [("py-feat/xgb_au", "xgb_au_classifier.skops", lambda p: _xgb_au(p, seed))],
        ("emotion", "svm"): [("py-feat/svm_emo", "svm_emo_classifier.skops", lambda p: _svm_emo(p, seed))],
        ("pose", "pose_mlp"): [("py-feat/pose_mlp_v2", "pose_mlp_v2.safetensors", lambda p: _pose_mlp(p, seed)),
                               ("py-feat/pose_mlp_v2", "pose_mlp_v2.json", _pose_meta)],
    }
    return _install_all(models_dir, source, makers,
                        lambda key: f"{profile}-{seed}" if key[0] == "face" else str(seed))


def build_alternatives(models_dir: Path, seed: int = 0,
                       cache_dir: Path | None = None) -> dict[tuple[str, str], tuple[HubFile, ...]]:
    """Generate the candidates py-feat 2.1.5 offers besides the default set (for
    benchmarks/bench_pyfeat_models.py); returns their registry. `img2pose` finds no face (its
    class head says background everywhere), so what follows it runs on one blank crop per frame.
    """
    source = Path(cache_dir or models_dir / "generated")
    source.mkdir(parents=True, exist_ok=True)
    makers = {
        ("landmark", "mobilenet"): [("py-feat/mobilenet", "mobilenet_224_model_best_gdconv_external.pth.tar",
                                     lambda p: _mobilenet(p, seed))],
        ("landmark", "pfld"): [("py-feat/pfld", "pfld_model_best.pth.tar", lambda p: _pfld(p, seed))],
        ("au", "svm"): [("py-feat/svm_au", "svm_au_classifier.skops", lambda p: _svm_au(p, seed))],
        ("emotion", "resmasknet"): [("py-feat/resmasknet", "ResMaskNet_Z_resmasking_dropout1_rot30.pth",
                                     lambda p: _resmasknet(p, seed)),
                                    ("py-feat/resmasknet", "config.json", _resmasknet_config)],
        ("face", "img2pose"): [("py-feat/img2pose", "model.safetensors", lambda p: _img2pose(p, seed)),
                               ("py-feat/img2pose", "config.json", _img2pose_config)],
    }
    return _install_all(models_dir, source, makers, lambda key: str(seed))


def _install_all(models_dir: Path, source: Path, makers, tag) -> dict[tuple[str, str], tuple[HubFile, ...]]:
    """Generate each file once into `source` (named by repo, tag and file) and install it in the hub cache."""
    registry = {}
    for key, files in makers.items():
        specs = []
        for repo_id, filename, make in files:
            generated = source / f"{repo_id.replace('/', '--')}--{tag(key)}--{filename}"
            if not generated.is_file():
                make(generated)
            data = generated.read_bytes()
            spec = HubFile(repo_id, filename, FAKE_REVISION, hashlib.sha256(data).hexdigest(),
                           len(data), "generated (random weights)")
            install_file(hub_dir(models_dir), spec, generated, FAKE_REVISION)
            specs.append(spec)
        registry[key] = tuple(specs)
    return registry


def _save_state_dict_safetensors(module, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".part")
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp))
    tmp.replace(path)


def _retinaface(path: Path, profile: str, seed: int) -> None:
    import torch
    from feat.face_detectors.Retinaface.Retinaface_model import RETINAFACE_R34_CFG, RetinaFace

    torch.manual_seed(seed)
    net = RetinaFace(RETINAFACE_R34_CFG)
    _set_heads(net, profile)
    _save_state_dict_safetensors(net, path)


def _set_heads(net, profile: str) -> None:
    """Class head: a constant face logit per (level, anchor size); box head: a constant size.

    Heads output per location `num_anchors * k` channels ordered anchor-major, levels 0..2 have
    anchor sizes (16, 32), (64, 128), (256, 512). Only level 2's 512-px anchor may fire.
    """
    import torch

    with torch.no_grad():
        for level, (cls, box) in enumerate(zip(net.ClassHead._convs, net.BboxHead._convs, strict=True)):
            cls.weight.zero_()
            box.weight.zero_()
            box.bias.zero_()
            logits = torch.tensor([[4.0, -4.0], [4.0, -4.0]])  # (background, face) per anchor
            if level == 2 and profile != "none":
                logits[1] = torch.tensor([-4.0, 4.0])
                if profile == "one":
                    # exp(0.2 * 21) ≈ 67x the 512-px anchor: every box covers every other one.
                    box.bias[4 + 2:4 + 4] = 21.0
            cls.bias.copy_(logits.reshape(-1))


def _mobilefacenet(path: Path, seed: int) -> None:
    import torch
    from feat.landmark_detectors.mobilefacenet_test import MobileFaceNet

    torch.manual_seed(seed)
    net = MobileFaceNet([112, 112], N_LANDMARK_FEATURES, device="cpu")
    # Random landmarks collapse and py-feat's face alignment (used by the AU and emotion heads)
    # cannot invert them; the last layer outputs a neutral face shape plus a small random part.
    with torch.no_grad():
        net.output_layer.bn.weight.fill_(0.002)
        net.output_layer.bn.bias.copy_(torch.from_numpy(_neutral_face()))
    torch.save({"state_dict": net.state_dict()}, path)


def _neutral_face() -> np.ndarray:
    """py-feat's neutral 68-point face, normalised into the crop, as (x0, y0, x1, y1, …)."""
    import feat

    table = np.loadtxt(Path(feat.__file__).parent / "resources" / "neutral_face_coordinates.csv",
                       delimiter=",", skiprows=1)
    low, high = table.min(axis=0), table.max(axis=0)
    return ((table - low) / (high - low) * 0.7 + 0.15).astype(np.float32).reshape(-1)


def _scaler_pca(rng: np.random.Generator):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    hog = rng.random((PCA_COMPONENTS * 2, HOG_FEATURES), dtype=np.float32)
    scaler = StandardScaler().fit(hog)
    return scaler, PCA(n_components=PCA_COMPONENTS, random_state=0).fit(scaler.transform(hog))


def _head_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(200, PCA_COMPONENTS + N_LANDMARK_FEATURES)).astype(np.float32)
    return x, (x[:, 0] + rng.normal(size=200) > 0).astype(int)


def _xgb_au(path: Path, seed: int) -> None:
    import xgboost
    from feat.au_detectors.StatLearning.SL_test import XGBClassifier
    from skops.io import dump

    rng = np.random.default_rng(seed)
    (su, pu), (sl, pl), (sf, pf) = (_scaler_pca(rng) for _ in range(3))
    classifiers = {}
    for key in AU_KEYS:
        x, y = _head_data(rng)
        classifiers[key] = xgboost.XGBClassifier(n_estimators=100, max_depth=3, n_jobs=1).fit(x, y)
    model = XGBClassifier()
    model.load_weights(scaler_upper=su, pca_model_upper=pu, scaler_lower=sl, pca_model_lower=pl,
                       scaler_full=sf, pca_model_full=pf, classifiers=classifiers)
    dump(model, path)


def _svm_emo(path: Path, seed: int) -> None:
    from feat.emo_detectors.StatLearning.EmoSL_test import EmoSVMClassifier
    from sklearn.svm import LinearSVC
    from skops.io import dump

    rng = np.random.default_rng(seed + 1)
    scaler, pca = _scaler_pca(rng)
    classifiers = {}
    for key in EMOTION_KEYS:
        x, y = _head_data(rng)
        classifiers[key] = LinearSVC().fit(x, y)
    model = EmoSVMClassifier()
    model.load_weights(scaler_full=scaler, pca_model_full=pca, classifiers=classifiers)
    dump(model, path)


_POSE_HIDDEN = (512, 256, 128)


def _pose_mlp(path: Path, seed: int) -> None:
    import torch
    from feat.utils.face_pose_mlp import PoseMLP

    torch.manual_seed(seed)
    _save_state_dict_safetensors(PoseMLP(hidden=_POSE_HIDDEN), path)


def _pose_meta(path: Path) -> None:
    meta: Mapping[str, object] = {"architecture": {
        "hidden": list(_POSE_HIDDEN), "dropout": 0.15,
        "output_normalization": {"mean": [0.0] * 6, "std": [10.0, 10.0, 10.0, 1.0, 1.0, 1.0]}}}
    path.write_text(json.dumps(meta))


def _mobilenet(path: Path, seed: int) -> None:
    import torch
    from feat.landmark_detectors.basenet_test import MobileNet_GDConv

    torch.manual_seed(seed)
    net = MobileNet_GDConv(N_LANDMARK_FEATURES)
    with torch.no_grad():  # a neutral face plus a small random part, as for mobilefacenet
        net.linear1.bn.weight.fill_(0.002)
        net.linear1.bn.bias.copy_(torch.from_numpy(_neutral_face()))
    torch.save({"state_dict": net.state_dict()}, path)


def _pfld(path: Path, seed: int) -> None:
    import torch
    from feat.landmark_detectors.pfld_compressed_test import PFLDInference

    torch.manual_seed(seed)
    net = PFLDInference()
    with torch.no_grad():
        net.fc.weight.mul_(0.002)
        net.fc.bias.copy_(torch.from_numpy(_neutral_face()))
    torch.save({"state_dict": net.state_dict()}, path)


def _svm_au(path: Path, seed: int) -> None:
    from feat.au_detectors.StatLearning.SL_test import SVMClassifier
    from sklearn.svm import LinearSVC
    from skops.io import dump

    rng = np.random.default_rng(seed + 2)
    (su, pu), (sl, pl), (sf, pf) = (_scaler_pca(rng) for _ in range(3))
    classifiers = {key: LinearSVC().fit(*_head_data(rng)) for key in AU_KEYS}
    model = SVMClassifier()
    model.load_weights(scaler_upper=su, pca_model_upper=pu, scaler_lower=sl, pca_model_lower=pl,
                       scaler_full=sf, pca_model_full=pf, classifiers=classifiers)
    dump(model, path)


def _resmasknet(path: Path, seed: int) -> None:
    import torch
    from feat.emo_detectors.ResMaskNet.resmasknet_test import ResMasking
    from torch import nn

    torch.manual_seed(seed)
    net = ResMasking("", in_channels=3)
    net.fc = nn.Sequential(nn.Dropout(0.4), nn.Linear(512, len(EMOTION_KEYS)))
    torch.save({"net": net.state_dict()}, path)


def _resmasknet_config(path: Path) -> None:
    path.write_text(json.dumps({"in_channels": 3, "num_classes": len(EMOTION_KEYS)}))


def _img2pose_config_dict() -> dict:
    """py-feat's own img2pose settings (`img2pose_test.model_config`, 4 decimals): written as compact
    JSON that is 2,359 bytes, the size the hub lists for `py-feat/img2pose/config.json` (2.36 kB)."""
    from feat.facepose_detectors.img2pose.img2pose_test import model_config

    return {k: np.round(v.double().numpy(), 4).tolist() if hasattr(v, "numpy") else v
            for k, v in model_config["img2pose"].items()}


def _img2pose_config(path: Path) -> None:
    path.write_text(json.dumps(_img2pose_config_dict()))


def _img2pose(path: Path, seed: int) -> None:
    import torch
    from feat.facepose_detectors.img2pose.deps.models import FasterDoFRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    cfg = _img2pose_config_dict()
    torch.manual_seed(seed)
    net = FasterDoFRCNN(backbone=resnet_fpn_backbone(backbone_name="resnet18", weights=None), num_classes=2,
                        min_size=cfg["min_size"], max_size=cfg["max_size"],
                        pose_mean=torch.tensor(cfg["pose_mean"]), pose_stddev=torch.tensor(cfg["pose_stddev"]),
                        threed_68_points=torch.tensor(cfg["threed_points"]),
                        rpn_pre_nms_top_n_test=cfg["rpn_pre_nms_top_n_test"],
                        rpn_post_nms_top_n_test=cfg["rpn_post_nms_top_n_test"])
    with torch.no_grad():  # background on every proposal: no face passes py-feat's score threshold
        cls = net.roi_heads.class_predictor.cls_score
        cls.weight.zero_()
        cls.bias.copy_(torch.tensor([4.0, -4.0]))
    _save_state_dict_safetensors(net, path)
