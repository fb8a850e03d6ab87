"""deploy.fusion: BN / layer-scale folding, dropout and drop-path removal, same outputs, on a test model that
holds every fold case (and the traps that must not fold) and on one real model per family."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import mobilevision
from mobilevision.deploy.fusion import count_norms, fuse
from mobilevision.deploy.inference import preprocess, sample_photos
from mobilevision.layers.drop_path import DropPath
from mobilevision.layers.layer_scale import LayerScale
from mobilevision.models.registry import ModelConfig, WeightSource, register_model
from zoo_checks import PooledTestClassifier


class DeployNet(PooledTestClassifier):
    """Small conv net with every fusing case: conv-BN, linear-BN1d, conv / linear layer-scale, dropout,
    drop-path, and two traps: conv -> in-place ReLU -> BN and a conv output used twice."""

    def __init__(self, num_classes=10, in_chans=3, drop_rate=0.2, drop_path_rate=0.1, width=16):
        super().__init__()
        w = width
        self.num_classes, self.num_features = num_classes, 2 * w
        self.stem = nn.Sequential(nn.Conv2d(in_chans, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.trap_conv, self.trap_act, self.trap_bn = nn.Conv2d(w, w, 3, 1, 1), nn.ReLU(inplace=True), nn.BatchNorm2d(w)
        self.pw, self.pw_bn, self.pw_ls = nn.Conv2d(w, w, 1, bias=False), nn.BatchNorm2d(w), LayerScale(w, 0.5)
        self.drop_path = DropPath(drop_path_rate)
        self.down = nn.Sequential(nn.Conv2d(w, 2 * w, 3, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.shared_conv, self.shared_bn = nn.Conv2d(2 * w, 2 * w, 1), nn.BatchNorm2d(2 * w)
        self.fc1, self.fc1_bn = nn.Linear(2 * w, 2 * w), nn.BatchNorm1d(2 * w)
        self.fc2, self.fc2_ls = nn.Linear(2 * w, 2 * w), LayerScale(2 * w, 0.5, channels_last=True)
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(2 * w, num_classes) if num_classes else nn.Identity()
        self.feature_info = [dict(num_chs=w, reduction=2, module="stem"),
                             dict(num_chs=2 * w, reduction=4, module="down")]

    def forward_stages(self, x):
        a = self.stem(x)  # (B, w, H/2, W/2)
        a = self.trap_bn(self.trap_act(self.trap_conv(a)))
        a = a + self.drop_path(self.pw_ls(self.pw_bn(self.pw(a))))
        b = self.down(a)  # (B, 2w, H/4, W/4)
        y = self.shared_conv(b)
        b = self.shared_bn(y) + y  # the conv output is used twice: folding the BN would be wrong
        return [a, b]

    def forward_head(self, x, pre_logits=False):
        x = x.mean((2, 3))  # (B, 2w)
        x = x + self.fc2_ls(self.fc2(torch.relu(self.fc1_bn(self.fc1(x)))))
        x = self.drop(x)
        return x if pre_logits else self.classifier(x)


if "test_deploynet" not in mobilevision.list_models("test_deploynet"):
    register_model(ModelConfig("test_deploynet", "test", DeployNet, input_size=(3, 32, 32), crop_pct=1.0,
                               interpolation="bilinear", weights=WeightSource(note="test model")))


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN affine and statistics, layer-scale and GRN values and a rescaled classifier, so that a
    wrong fold (or a wrong export) shows in the logits.

    BN statistics are measured on real photos (scikit-image's samples) and noise, the two kinds of input the
    tests feed, as training leaves them: every layer's
    output keeps a trained network's scale, so even 50-layer models give logits of a few units instead of
    values that grow with depth and drown fp32 in rounding.
    """
    g = torch.Generator().manual_seed(seed)

    def u(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    c, h, w = model.default_cfg["input_size"]
    was = model.training
    with torch.no_grad():
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            if m.affine:
                u(m.weight, 0.5, 1.5), u(m.bias, -0.2, 0.2)
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("gamma", "scale") or ".grn." in name or ".ls" in name:
                u(p, 0.1, 0.3) if p.ndim <= 1 else None
        if bns:
            size = (h, w)
            photos = torch.stack([preprocess(p, model.default_cfg, size=size) for p in sample_photos().values()])
            batch = torch.cat([photos, torch.randn(3, c, *size, generator=g)])  # the two kinds of test input
            momenta = [m.momentum for m in bns]
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average: one batch sets the statistics exactly
            model.train()(batch)
            for m, mom in zip(bns, momenta):
                m.momentum = mom
        head = model.get_classifier() if hasattr(model, "get_classifier") else None
        if isinstance(head, nn.Linear):
            # logits of a few units, like a trained model's: big enough to show errors, small enough for fp32
            head.weight.normal_(0, 1.0, generator=g)
            peak = model.eval()(batch if bns else torch.randn(2, c, min(h, 256), min(w, 256), generator=g)).abs().max()
            head.weight.mul_(4.0 / peak.clamp_min(1e-6))
            if head.bias is not None:
                head.bias.zero_()
    model.train(was)
    return model


def test_fuse_folds_everything_foldable_and_keeps_outputs():
    model = randomize(mobilevision.create_model("test_deploynet")).eval()
    fused, rep = fuse(model, example=torch.randn(2, 3, 32, 32), return_report=True)
    pairs = {(f.kind, f.target, f.source) for f in rep.folds}
    assert ("bn", "stem.0", "stem.1") in pairs and ("bn", "pw", "pw_bn") in pairs
    assert ("bn", "fc1", "fc1_bn") in pairs and ("bn", "down.0", "down.1") in pairs
    assert ("scale", "fc2", "fc2_ls") in pairs
    # pw -> pw_bn -> pw_ls: the scale folds after the BN into the same conv
    assert ("scale", "pw", "pw_ls") in pairs
    assert not any(f.source in ("trap_bn", "shared_bn") for f in rep.folds)
    assert [f.source for f in rep.rejected] == ["shared_bn"]  # caught by verification, not by the hooks
    names = {n for n, m in fused.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert names == {"trap_bn", "shared_bn"}
    assert not any(isinstance(m, (nn.Dropout, DropPath, LayerScale)) for m in fused.modules())
    x = torch.randn(4, 3, 40, 48)  # another size than the verification input
    with torch.no_grad():
        ref, out = model(x), fused(x)
    assert ref.abs().max() > 0.1
    assert (out - ref).abs().max().item() <= 1e-4
    assert model.training is False and isinstance(model.drop, nn.Dropout)  # the input model is untouched


def test_fuse_from_train_mode_is_deterministic():
    model = randomize(mobilevision.create_model("test_deploynet", drop_rate=0.5, drop_path_rate=0.5)).train()
    fused = fuse(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fused(x), fused(x))
    assert model.training  # left as it was


def test_block_fuse_method_is_called():
    class Special(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.tensor(2.0))
            self.fused = False

        def forward(self, x):
            return x * self.a if not self.fused else x * 2.0

        def fuse(self):
            self.fused = True

    net = nn.Sequential(nn.Conv2d(3, 4, 3), Special())
    fused = fuse(net, example=torch.randn(1, 3, 8, 8))
    assert fused[1].fused and not net[1].fused


def test_fuse_raises_when_block_fuse_breaks_outputs():
    class Broken(nn.Module):
        def forward(self, x):
            return x + getattr(self, "offset", 0.0)

        def fuse(self):
            self.offset = 1.0

    with pytest.raises(RuntimeError, match="changed the outputs"):
        fuse(nn.Sequential(nn.Conv2d(3, 4, 3), Broken()), example=torch.randn(1, 3, 8, 8))


# One model per family, at a small size: BN (CNN families), layer-scale (PoolFormer v1), drop-path everywhere.
FAMILY_MODELS = ["mobilenetv3_small_075", "efficientnet_b0", "moga_c", "mobilevit_xxs", "mobileformer_26m",
                 "poolformer_s12", "convnextv2_atto"]


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_fuse_real_models(name):
    model = randomize(mobilevision.create_model(name, drop_rate=0.1, drop_path_rate=0.1)).eval()
    x = torch.randn(2, 3, 64, 64)
    fused, rep = fuse(model, example=x, return_report=True)
    assert not any(isinstance(m, (nn.Dropout, DropPath)) for m in fused.modules())
    n_bn = count_norms(model)
    assert count_norms(fused) == 0 or n_bn == 0, f"{name}: {count_norms(fused)} of {n_bn} BatchNorms left"
    if name == "poolformer_s12":
        assert sum(f.kind == "scale" for f in rep.folds) > 0
    with torch.no_grad():
        diff = (fused(x) - model(x)).abs().max().item()
    assert diff <= 1e-4, f"{name}: fused differs by {diff:.2e}"


def test_deploy_functions_are_importable_as_documented():
    """README: `deploy.fuse(model)`; `mobilevision.deploy.fuse` used to be a module (TypeError when called)."""
    import mobilevision as mv
    from mobilevision import deploy

    for name in ("fuse", "export_onnx", "verify_onnx", "quantize_onnx", "profile", "benchmark", "predict"):
        assert callable(getattr(deploy, name)) and not isinstance(getattr(deploy, name), type(deploy)), name
    model = randomize(mv.create_model("test_deploynet")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(mv.deploy.fuse(model)(x), model(x), atol=1e-4, rtol=1e-4)


def test_fuse_a_detector_keeps_its_raw_outputs():
    torch.manual_seed(0)
    det = mobilevision.create_model("ssdlite_mobilevit_xxs", num_classes=4).eval()
    x = torch.rand(1, 3, 128, 128)
    fused = fuse(det, example=x)
    assert count_norms(fused) < count_norms(det) // 4
    with torch.no_grad():
        ref, got = det.forward_raw(x), fused.forward_raw(x)
    torch.testing.assert_close(got[0], ref[0], atol=1e-3, rtol=0)  # boxes, pixels
    torch.testing.assert_close(got[1], ref[1], atol=1e-4, rtol=0)  # scores
    assert isinstance(fused(x), list) and set(fused(x)[0]) == {"boxes", "scores", "labels"}
