"""MoGA-A/B/C: published figures, loading the official xiaomi-automl/MoGA layout, the classifier protocol.

The official code cannot be imported here, so `official_forward` below is an independent functional
re-statement of `models/MoGA_{A,B,C}.py` (F.conv2d / F.batch_norm over the official key names). A state dict
in the official layout with random values must give the same logits through `create_model(checkpoint_path=)`.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import mobilevision
from mobilevision.models.moga import checkpoint_filter
from zoo_checks import assert_classifier_protocol, assert_matches_published

MODELS = ["moga_a", "moga_b", "moga_c"]

# The official `mb_config` rows: expansion, out_channel, kernel_size, stride, act (0 ReLU, 1 h-swish), se.
OFFICIAL_MB_CONFIG = {
    "moga_a": [[6, 24, 5, 2, 0, 0], [6, 24, 7, 1, 0, 0], [6, 40, 3, 2, 0, 0], [6, 40, 3, 1, 0, 1],
               [3, 40, 3, 1, 0, 1], [6, 80, 3, 2, 1, 1], [6, 80, 3, 1, 1, 0], [6, 80, 7, 1, 1, 0],
               [3, 80, 7, 1, 1, 1], [6, 112, 7, 1, 1, 0], [6, 112, 3, 1, 1, 0], [6, 160, 3, 2, 1, 0],
               [6, 160, 5, 1, 1, 1], [6, 160, 5, 1, 1, 1]],
    "moga_b": [[3, 24, 3, 2, 0, 0], [3, 24, 3, 1, 0, 0], [6, 40, 7, 2, 0, 0], [3, 40, 3, 1, 0, 0],
               [6, 40, 5, 1, 0, 0], [6, 80, 3, 2, 1, 1], [6, 80, 5, 1, 1, 1], [3, 80, 3, 1, 1, 0],
               [6, 80, 7, 1, 1, 1], [6, 112, 7, 1, 1, 0], [3, 112, 5, 1, 1, 0], [6, 160, 7, 2, 1, 1],
               [6, 160, 7, 1, 1, 1], [6, 160, 3, 1, 1, 1]],
    "moga_c": [[3, 24, 5, 2, 0, 0], [3, 24, 3, 1, 0, 0], [3, 40, 5, 2, 0, 0], [3, 40, 3, 1, 0, 0],
               [3, 40, 5, 1, 0, 0], [3, 80, 5, 2, 1, 0], [6, 80, 5, 1, 1, 1], [3, 80, 5, 1, 1, 0],
               [3, 80, 5, 1, 1, 0], [6, 112, 3, 1, 1, 0], [6, 112, 3, 1, 1, 1], [6, 160, 3, 2, 1, 1],
               [6, 160, 3, 1, 1, 1], [6, 160, 3, 1, 1, 1]],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def official_state_dict(name: str, n_class: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the official module names, with the official shapes."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(key, out_c, in_c, k, bias=False):
        sd[key + ".weight"] = torch.randn(out_c, in_c, k, k, generator=g) * math.sqrt(2.0 / (in_c * k * k))
        if bias:
            sd[key + ".bias"] = torch.randn(out_c, generator=g) * 0.1

    def bn(key, c):
        sd[key + ".weight"] = torch.rand(c, generator=g) + 0.5
        sd[key + ".bias"] = (torch.rand(c, generator=g) - 0.5) * 0.2
        sd[key + ".running_mean"] = (torch.rand(c, generator=g) - 0.5) * 0.2
        sd[key + ".running_var"] = torch.rand(c, generator=g) + 0.5
        sd[key + ".num_batches_tracked"] = torch.tensor(0)

    conv("stem.0", 16, 3, 3)
    bn("stem.1", 16)
    conv("separable_conv.0", 16, 1, 3)
    bn("separable_conv.1", 16)
    conv("separable_conv.3", 16, 16, 1)
    bn("separable_conv.4", 16)
    inp = 16
    for i, (t, c, k, s, a, se) in enumerate(OFFICIAL_MB_CONFIG[name]):
        hidden = round(inp * t)
        p = f"mb_module.{i}"
        conv(p + ".conv1", hidden, inp, 1)
        bn(p + ".bn1", hidden)
        conv(p + ".conv2", hidden, 1, k)
        bn(p + ".bn2", hidden)
        if se:
            conv(p + ".mid_se.conv.0", hidden // 4, hidden, 1, bias=True)
            conv(p + ".mid_se.fc.0", hidden, hidden // 4, 1, bias=True)
        conv(p + ".conv3", c, hidden, 1)
        bn(p + ".bn3", c)
        inp = c
    conv("conv_before_pooling.0", 960, inp, 1)
    bn("conv_before_pooling.1", 960)
    conv("conv_head.0", 1280, 960, 1)
    sd["classifier.weight"] = torch.randn(n_class, 1280, generator=g) / math.sqrt(1280)
    sd["classifier.bias"] = torch.randn(n_class, generator=g) * 0.1
    return sd


def official_forward(name: str, sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The official forward (eval mode) written with functional ops over the official keys."""
    def bn(key, y):
        return F.batch_norm(y, sd[key + ".running_mean"], sd[key + ".running_var"], sd[key + ".weight"],
                            sd[key + ".bias"], training=False, eps=1e-5)

    def hswish(y):
        return y * F.relu6(y + 3.0) / 6.0

    x = hswish(bn("stem.1", F.conv2d(x, sd["stem.0.weight"], stride=2, padding=1)))
    x = F.relu(bn("separable_conv.1", F.conv2d(x, sd["separable_conv.0.weight"], padding=1, groups=16)))
    x = bn("separable_conv.4", F.conv2d(x, sd["separable_conv.3.weight"]))
    inp = 16
    for i, (t, c, k, s, a, se) in enumerate(OFFICIAL_MB_CONFIG[name]):
        act = hswish if a else F.relu
        p = f"mb_module.{i}"
        hidden = round(inp * t)
        y = act(bn(p + ".bn1", F.conv2d(x, sd[p + ".conv1.weight"])))
        y = act(bn(p + ".bn2", F.conv2d(y, sd[p + ".conv2.weight"], stride=s, padding=k // 2, groups=hidden)))
        if se:
            w = y.mean((2, 3), keepdim=True)
            w = act(F.conv2d(w, sd[p + ".mid_se.conv.0.weight"], sd[p + ".mid_se.conv.0.bias"]))
            w = F.conv2d(w, sd[p + ".mid_se.fc.0.weight"], sd[p + ".mid_se.fc.0.bias"])
            y = y * (F.relu6(w + 3.0) / 6.0)
        y = bn(p + ".bn3", F.conv2d(y, sd[p + ".conv3.weight"]))
        x = x + y if s == 1 and inp == c else y
        inp = c
    x = hswish(bn("conv_before_pooling.1", F.conv2d(x, sd["conv_before_pooling.0.weight"])))
    x = hswish(F.conv2d(x.mean((2, 3), keepdim=True), sd["conv_head.0.weight"]))
    return F.linear(x.flatten(1), sd["classifier.weight"], sd["classifier.bias"])


@pytest.mark.parametrize("name", MODELS)
def test_matches_published(name):
    assert_matches_published(name)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_official_layout_gives_official_outputs(name, fmt, tmp_path):
    sd = official_state_dict(name)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = official_forward(name, sd, x)
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    model = mobilevision.create_model(name, checkpoint_path=path).eval()
    with torch.no_grad():
        out = model(x)
    assert ref.abs().max() > 0.1  # the reference is not degenerate
    # random official weights give logits near 1e3, where float32 rounding alone is ~1e-4 (the head's 1x1 conv
    # runs as a Linear here)
    assert (out - ref).abs().max().item() <= 1e-4 + 1e-6 * ref.abs().max().item()


def test_block_order_matters(tmp_path):
    """Swapping two same-shaped official blocks still loads but no longer matches: the mapping is checked."""
    sd = official_state_dict("moga_a")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = official_forward("moga_a", sd, x)
    swapped = dict(sd)
    for k in [k for k in sd if k.startswith("mb_module.12.")]:
        k2 = k.replace("mb_module.12.", "mb_module.13.")
        swapped[k], swapped[k2] = sd[k2], sd[k]
    save_file(swapped, str(tmp_path / "swapped.safetensors"))
    model = mobilevision.create_model("moga_a", checkpoint_path=tmp_path / "swapped.safetensors").eval()
    with torch.no_grad():
        assert (model(x) - ref).abs().max().item() > 1e-3


def test_own_layout_passes_through(tmp_path):
    src = mobilevision.create_model("moga_c").eval()
    own = src.state_dict()
    assert checkpoint_filter(own, src) is own
    save_file(own, str(tmp_path / "own.safetensors"))
    dst = mobilevision.create_model("moga_c", checkpoint_path=tmp_path / "own.safetensors").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_structure_follows_official_code():
    model = mobilevision.create_model("moga_a")
    assert model.conv_head.bias is None  # bias-free head conv
    assert not model.blocks[0][0].has_skip  # the separable conv has no shortcut
    se_blocks = [i for i, b in enumerate(b for stage in model.blocks[1:-1] for b in stage) if hasattr(b.se, "gate")]
    assert se_blocks == [3, 4, 5, 8, 12, 13]  # 0-based: SE on the code's blocks 4, 5, 6, 9, 13, 14
    blk = model.blocks[3][0]  # first 80-channel block: hidden 240, SE 60 with h-swish inside, h-sigmoid gate
    assert blk.se.conv_reduce.out_channels == 60
    assert isinstance(blk.se.act1, torch.nn.Hardswish) and isinstance(blk.se.gate, torch.nn.Hardsigmoid)
    assert isinstance(model.blocks[1][0].act1, torch.nn.ReLU)


@pytest.mark.parametrize("name", MODELS)
def test_classifier_protocol(name):
    assert_classifier_protocol(name, size=64, reductions=[2, 4, 8, 16, 32])
    fx = mobilevision.create_model(name, features_only=True, out_indices=(2, 4))
    assert fx.channels() == [40, 960] and fx.reductions() == [8, 32]


def test_non_square_in_chans_and_no_public_weights():
    model = mobilevision.create_model("moga_b", in_chans=1, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 96)).shape == (1, 10)
    with pytest.raises(RuntimeError, match="channels"):
        model(torch.randn(1, 3, 64, 96))
    with pytest.raises(ValueError, match="questionnaire"):
        mobilevision.create_model("moga_a", pretrained=True)
