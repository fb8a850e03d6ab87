"""Dense-prediction backbones: output_stride (dilation), feature_location="expansion", feature_info true to the
tensors for every family, and torchvision's MobileNetV2/V3 state dicts (incl. reduced tail and dilated)."""
from __future__ import annotations

import pytest
import torch

import mobilevision

# One variant per family; (name, output strides it supports).
FAMILIES = [
    ("mobilenetv1_025", (8, 16, 32)),
    ("mobilenetv2_035", (8, 16, 32)),
    ("mobilenetv3_small_075", (8, 16, 32)),
    ("efficientnet_b0", (8, 16, 32)),
    ("moga_c", (8, 16, 32)),
    ("convnextv2_atto", (8, 16, 32)),
    ("mobilevit_xxs", (8, 16, 32)),
    ("poolformer_s12", (32,)),  # the pooling mixer has no dilated form
    ("caformer_s18", (8, 16, 32)),
    ("mobileformer_26m", (32,)),
]
IR_FAMILIES = ["mobilenetv2_035", "mobilenetv3_small_075", "efficientnet_b0", "moga_c"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _check_maps(fx, h: int = 64, w: int = 96) -> list[torch.Tensor]:
    with torch.no_grad():
        maps = fx.eval()(torch.randn(1, 3, h, w))
    assert len(maps) == len(fx.feature_info)
    for m, info in zip(maps, fx.feature_info):
        assert m.shape[1] == info["num_chs"], info
        assert (h // m.shape[2], w // m.shape[3]) == (info["reduction"],) * 2, (tuple(m.shape), info)
    return maps


@pytest.mark.parametrize("name, strides", FAMILIES)
def test_output_stride_and_feature_info_match_the_tensors(name, strides):
    for os_ in strides:
        fx = mobilevision.create_model(name, features_only=True, output_stride=os_)
        maps = _check_maps(fx)
        assert max(fx.reductions()) == os_ and maps[-1].shape[-1] == 96 // os_
    for os_ in sorted({8, 16} - set(strides)):
        with pytest.raises(ValueError, match=f"output_stride {os_} is not supported"):
            mobilevision.create_model(name, features_only=True, output_stride=os_)
    with pytest.raises(ValueError, match="output_stride"):
        mobilevision.create_model(name, output_stride=4)


@pytest.mark.parametrize("name", ["mobilenetv3_large_100", "convnextv2_atto", "mobilevit_xxs"])
def test_dilated_model_takes_the_same_weights(name):
    """Dilation changes no parameter: a state dict of the OS32 model loads strictly into the OS8 one."""
    ref = mobilevision.create_model(name)
    dil = mobilevision.create_model(name, output_stride=8)
    dil.load_state_dict(ref.state_dict())
    assert [tuple(v.shape) for v in dil.state_dict().values()] == [tuple(v.shape) for v in ref.state_dict().values()]
    assert any(m.dilation != (1, 1) for m in dil.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("name", IR_FAMILIES)
def test_expansion_taps(name):
    plain = mobilevision.create_model(name, features_only=True)
    fx = mobilevision.create_model(name, features_only=True, feature_location="expansion", output_stride=16)
    maps = _check_maps(fx)
    assert fx.reductions() == [2, 4, 8, 16, 16]
    assert fx.feature_info[-1] == {**plain.feature_info[-1], "reduction": 16}  # the last map is the network output
    assert fx.feature_info[3]["module"].endswith(".0.conv_pw")
    assert fx.channels()[3] > plain.channels()[3]  # the expanded width
    assert maps[3].min() >= -0.375 - 1e-6 or maps[3].min() >= 0  # taken after the activation


def test_expansion_tap_is_torchvisions_ssdlite_c4():
    """MobileNetV3-Large: 672 channels at stride 16 = torchvision's features[13].block[0] output."""
    fx = mobilevision.create_model("mobilenetv3_large_100", features_only=True, feature_location="expansion")
    assert fx.channels() == [64, 72, 240, 672, 960] and fx.reductions() == [2, 4, 8, 16, 32]
    assert fx.feature_info[3]["module"] == "blocks.5.0.conv_pw"
    with pytest.raises(ValueError, match="expansion"):
        mobilevision.create_model("mobilenetv1_100", features_only=True, feature_location="expansion")
    with pytest.raises(ValueError, match="feature_location"):
        mobilevision.create_model("mobilenetv2_100", features_only=True, feature_location="bottleneck")


def _perturb_bn(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("name", ["mobilenetv3_large_100", "efficientnet_b0"])
def test_output_stride_16_features_match_timm(name):
    """Same weights: timm's `features_only=True, output_stride=16` maps against ours (the TF / timm rule)."""
    import timm

    ref = _perturb_bn(timm.create_model(name, features_only=True, output_stride=16))
    ours = mobilevision.create_model(name, features_only=True, output_stride=16)
    missing, unexpected = ours.model.load_state_dict(ref.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("conv_head", "bn2", "classifier")) for k in missing)
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps, expected = ours.eval()(x), ref(x)
    assert ours.reductions() == list(ref.feature_info.reduction()) == [2, 4, 8, 16, 16]
    for m, r in zip(maps, expected):
        assert m.shape == r.shape and (m - r).abs().max().item() <= 1e-4


def test_convnext_output_stride_16_matches_timm(tmp_path):
    import timm
    from safetensors.torch import save_file

    ref = _perturb_bn(timm.create_model("convnextv2_atto", output_stride=16))
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "w.safetensors"))
    ours = mobilevision.create_model("convnextv2_atto", output_stride=16,
                                     checkpoint_path=tmp_path / "w.safetensors").eval()
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours.forward_features(x), ref.forward_features(x)
        assert a.shape == b.shape and a.shape[-2:] == (6, 8)
        assert (a - b).abs().max().item() <= 1e-4
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-4


# ------------------------------------------------------------------------------------- torchvision layouts
def _torchvision(arch: str, **kwargs) -> torch.nn.Module:
    """A random-init torchvision model whose BN statistics are measured on random images (so activations keep
    their scale through the depth and the logits depend on the input), then perturbed."""
    import torchvision

    ref = getattr(torchvision.models, arch)(weights=None, **kwargs)
    bns = [m for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
        for m in ref.classifier.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0.0, m.in_features ** -0.5)
        ref.train()(torch.randn(8, 3, 96, 96, generator=torch.Generator().manual_seed(3)))
        for m in bns:
            m.running_mean.add_(torch.empty_like(m.running_mean).uniform_(-0.05, 0.05))
            m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.8, 1.2))
    return ref.eval()


@pytest.mark.parametrize("arch, name, kwargs", [
    ("mobilenet_v2", "mobilenetv2_100", {}),
    ("mobilenet_v3_large", "mobilenetv3_large_100", dict(bn_eps=1e-3)),
    ("mobilenet_v3_small", "mobilenetv3_small_100", dict(bn_eps=1e-3)),
])
def test_torchvision_state_dicts_load_with_identical_logits(arch, name, kwargs, tmp_path):
    from safetensors.torch import save_file

    ref = _torchvision(arch)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / f"{arch}.safetensors"))
    torch.save(ref.state_dict(), tmp_path / f"{arch}.pth")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ref(x)
    assert expected.abs().max() > 0.5 and (expected[0] - expected[1]).abs().max() > 0.1
    for path in (tmp_path / f"{arch}.safetensors", tmp_path / f"{arch}.pth"):
        model = mobilevision.create_model(name, checkpoint_path=path, **kwargs).eval()
        with torch.no_grad():
            assert (model(x) - expected).abs().max().item() <= 1e-4
    if kwargs:  # the BatchNorm eps is part of the numerics: refuse rather than differ silently
        with pytest.raises(ValueError, match="eps 1e-3"):
            mobilevision.create_model(name, checkpoint_path=tmp_path / f"{arch}.pth")


@pytest.mark.parametrize("size", ["large", "small"])
@pytest.mark.parametrize("reduced_tail, dilated", [(True, False), (False, True), (True, True)])
def test_torchvision_reduced_tail_and_dilated(size, reduced_tail, dilated):
    ref = _torchvision(f"mobilenet_v3_{size}", reduced_tail=reduced_tail, dilated=dilated)
    model = mobilevision.create_model(f"mobilenetv3_{size}_100", bn_eps=1e-3, reduced_tail=reduced_tail,
                                      dilated=dilated)
    model.load_state_dict(model.checkpoint_filter(ref.state_dict(), model))
    model.eval()
    x = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model.forward_features(x).shape == ref.features(x).shape
        assert (model(x) - ref(x)).abs().max().item() <= 1e-4
    if dilated:
        assert model.feature_info[-1]["reduction"] == 16


def test_torchvision_ssdlite_taps(tmp_path):
    """The reduced-tail MobileNetV3-Large as torchvision's SSDLite reads it: C4 = features[13].block[0]
    (672 ch, stride 16), C5 = the end of `features` (480 ch, stride 32)."""
    ref = _torchvision("mobilenet_v3_large", reduced_tail=True)
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    fx = mobilevision.create_model("mobilenetv3_large_100", bn_eps=1e-3, reduced_tail=True, features_only=True,
                                   feature_location="expansion", out_indices=(3, 4), checkpoint_path=tmp_path / "tv.pth")
    fx.eval()
    x = torch.randn(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        c4 = ref.features[13].block[0](ref.features[:13](x))
        c5 = ref.features(x)
        ours = fx(x)
    assert fx.channels() == [672, 480] and fx.reductions() == [16, 32]
    assert (ours[0] - c4).abs().max().item() <= 1e-4 and (ours[1] - c5).abs().max().item() <= 1e-4
    assert tuple(ours[0].shape[-2:]) == (20, 20) and tuple(ours[1].shape[-2:]) == (10, 10)


def test_dilated_needs_output_stride_16():
    with pytest.raises(ValueError, match="dilated=True is output stride 16"):
        mobilevision.create_model("mobilenetv3_large_100", dilated=True, output_stride=8)


def test_output_stride_and_feature_location_are_saved(tmp_path):
    from mobilevision.models.checkpoint import save_pretrained

    model = mobilevision.create_model("mobilenetv3_small_100", output_stride=8, feature_location="expansion",
                                      num_classes=3)
    save_pretrained(model, tmp_path)
    restored = mobilevision.create_model("mobilenetv3_small_100", checkpoint_path=tmp_path, features_only=True)
    assert restored.feature_info == model.feature_info and restored.reductions() == [2, 4, 8, 8, 8]


def test_fuse_keeps_dilated_expansion_features():
    from mobilevision.deploy import fuse

    fx = mobilevision.create_model("mobilenetv3_large_100", features_only=True, output_stride=16,
                                   feature_location="expansion").eval()
    with torch.no_grad():
        for m in fx.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        x = torch.randn(1, 3, 96, 96)
        before = fx(x)
        fused = fuse(fx)
        after = fused(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    for a, b in zip(before, after):
        assert (a - b).abs().max().item() <= 1e-4


def test_out_modules_head_conv_and_unused_layers_removed():
    """Block taps (torchvision's segmenter C3 = blocks.2.0) match the classifier's own walk; head_conv gives
    MobileNetV2's 1280-wide pre-pool map; layers no map uses are gone from the parameters."""
    full = mobilevision.create_model("mobilenetv3_large_100").eval()
    fx = mobilevision.create_model("mobilenetv3_large_100", features_only=True, out_modules=("blocks.2.0", "blocks.-1"))
    fx.model.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith(("conv_head", "classifier"))})
    assert fx.feature_info == [{"num_chs": 40, "reduction": 8, "module": "blocks.2.0"},
                               {"num_chs": 960, "reduction": 32, "module": "blocks.6"}]
    assert isinstance(fx.model.conv_head, torch.nn.Identity)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        c3, c5 = fx.eval()(x)
        y = full.blocks[:2](full.forward_stem(x))
        torch.testing.assert_close(c3, full.blocks[2][0](y))
        torch.testing.assert_close(c5, full.blocks(full.forward_stem(x)))
    v2 = mobilevision.create_model("mobilenetv2_100", features_only=True, out_indices=(-1,), head_conv=True)
    assert v2.channels() == [1280] and isinstance(v2.model.conv_head, torch.nn.Conv2d)
    plain = mobilevision.create_model("mobilenetv2_100", features_only=True)
    assert isinstance(plain.model.conv_head, torch.nn.Identity)
    assert sum(p.numel() for p in v2.parameters()) - sum(p.numel() for p in plain.parameters()) == 320 * 1280 + 2 * 1280
    with pytest.raises(ValueError, match="out_modules entry 'blocks.9.0'"):
        mobilevision.create_model("mobilenetv3_large_100", features_only=True, out_modules=("blocks.9.0",))
    with pytest.raises(ValueError, match="features_only=True"):
        mobilevision.create_model("mobilenetv3_large_100", out_modules=("blocks.2.0",))


def test_stride_or_dilate_turns_a_stride_past_the_output_stride_into_dilation():
    from mobilevision.models.features import stride_or_dilate

    assert stride_or_dilate(2, 8, 1, 32) == (2, 1)  # 8 -> 16 stays within 32
    assert stride_or_dilate(2, 16, 1, 16) == (1, 2)  # 16 -> 32 would pass 16: dilate instead
    assert stride_or_dilate(2, 16, 2, 8) == (1, 4)  # dilations compound
    assert stride_or_dilate(1, 32, 1, 16) == (1, 1)  # stride-1 layers never change
