"""Backbone of §2.2: ResNet (ImageNet) without its classifier → GAP feature g(x) → BatchNorm → f(x).

``ReIDNet.forward`` returns ``(g, f)`` in train and eval mode: g feeds the triplet loss (Eq. 5), f the
memory banks (Eq. 1-4) and retrieval. The BN neck's bias is frozen (the "BNNeck" ReID convention), and
``last_stride=1`` (ReID convention, unstated in the paper) doubles the resolution of the last feature map.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

from .config import PiridConfig

ARCHS = ("resnet18", "resnet34", "resnet50")
# top-level key of a weights file written by pirid_lite.reproduce.source_weights (synthetic pre-training)
PRETRAINING_KEY = "pirid_lite_pretraining"
# torchvision's best ImageNet weights per architecture (enum class name, member name)
_IMAGENET_WEIGHTS = {"resnet18": ("ResNet18_Weights", "IMAGENET1K_V1"),
                     "resnet34": ("ResNet34_Weights", "IMAGENET1K_V1"),
                     "resnet50": ("ResNet50_Weights", "IMAGENET1K_V2")}


def _imagenet_weights(arch: str) -> torchvision.models.WeightsEnum:
    enum_name, member = _IMAGENET_WEIGHTS[arch]
    return getattr(getattr(torchvision.models, enum_name), member)


def _cached_checkpoint(weights: torchvision.models.WeightsEnum) -> Path:
    """Where ``torch.hub`` keeps the downloaded file of ``weights`` (so it loads offline when present)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


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


class ReIDNet(nn.Module):
    """ResNet-{18,34,50} → GAP g(x) → BatchNorm1d (bias frozen) f(x); §2.2.

    ``pretrained``: ``"imagenet"`` (torchvision weights API; the torch hub cache is used when present, and a
    failed download falls back to random initialisation with a warning), a checkpoint path (plain state
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
        backbone = getattr(torchvision.models, arch)(weights=None)
        self.feature_dim: int = backbone.fc.in_features
        backbone.fc = nn.Identity()  # the classifier is removed (§2.2); GAP stays as backbone.avgpool
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
            return self._load_imagenet()
        return self._load_checkpoint(Path(pretrained))

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

    # ------------------------------------------------------------------ forward
    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional feature map (B, d, h, w) — before GAP."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g, f)``: GAP feature g(x) and BN feature f(x), both (B, feature_dim)."""
        g = torch.flatten(self.backbone.avgpool(self.feature_map(x)), 1)
        return g, self.bottleneck(g)


def build_model(cfg: PiridConfig) -> ReIDNet:
    """The §2.2 network of a config (``arch``, ``pretrained``, ``last_stride``)."""
    return ReIDNet(arch=cfg.arch, pretrained=cfg.pretrained, last_stride=cfg.last_stride)
