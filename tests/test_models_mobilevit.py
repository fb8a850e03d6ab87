"""MobileViT: published figures, timm parity, the ml-cvnets layout, patch unfolding, the protocol."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import mobilevision
from mobilevision.models.mobilevit import fold_patches, unfold_patches
from zoo_checks import (assert_classifier_protocol, assert_matches_published, assert_timm_parity,
                        assert_trains_and_runs_at_other_sizes)

VARIANTS = ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", VARIANTS)
def test_matches_published(name):
    assert_matches_published(name)


@pytest.mark.parametrize("name", VARIANTS)
def test_timm_parity_256(name, tmp_path):
    assert_timm_parity(name, tmp_path, size=256, formats=("safetensors",))


@pytest.mark.parametrize("size", [160, (100, 130)])
def test_timm_parity_other_sizes(size, tmp_path):
    # (100, 130) reaches maps the 2x2 patches do not divide: both resize inside the block.
    assert_timm_parity("mobilevit_xs", tmp_path, size=size, formats=("safetensors",) if size != 160 else
                       ("safetensors", "pth"))


def test_unfold_layout_and_roundtrip():
    x = torch.randn(2, 3, 6, 8)
    t = unfold_patches(x, (2, 2))  # (B*P, N, C)
    assert t.shape == (2 * 4, 12, 3)
    for b, c, i, j in [(0, 0, 0, 0), (1, 2, 5, 7), (0, 1, 3, 4), (1, 0, 2, 5)]:
        p, n = (i % 2) * 2 + (j % 2), (i // 2) * 4 + (j // 2)
        assert t[b * 4 + p, n, c] == x[b, c, i, j]
    assert torch.equal(fold_patches(t, 2, (6, 8), (2, 2)), x)


class _MaxRank(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.max_rank = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor):
                self.max_rank = max(self.max_rank, o.dim())
        return out


def test_no_tensor_above_rank_5():
    model = mobilevision.create_model("mobilevit_xxs").eval()
    with torch.no_grad(), _MaxRank() as mode:
        model(torch.randn(1, 3, 64, 64))
    assert mode.max_rank <= 5


def _to_cvnets(state, model):
    """Our keys written in the apple/ml-cvnets MobileViT layout (conv_1, layer_N, global_rep, ...)."""
    conv = {"conv1_1x1": "block.exp_1x1", "conv2_kxk": "block.conv_3x3", "conv3_1x1": "block.red_1x1",
            "conv_kxk": "local_rep.conv_3x3", "conv_proj": "conv_proj", "conv_fusion": "fusion"}
    layer = {"norm1": "pre_norm_mha.0", "attn.qkv": "pre_norm_mha.1.qkv_proj", "attn.proj": "pre_norm_mha.1.out_proj",
             "norm2": "pre_norm_ffn.0", "mlp.fc1": "pre_norm_ffn.1", "mlp.fc2": "pre_norm_ffn.4"}
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] in ("stem", "final_conv"):
            top = "conv_1" if parts[0] == "stem" else "conv_1x1_exp"
            new = f"{top}.block.{'conv' if parts[1] == 'conv' else 'norm'}.{'.'.join(parts[2:])}"
        elif parts[0] == "head":
            new = "classifier.fc." + parts[-1]
        else:
            stage, idx, mod, rest = int(parts[1]), parts[2], parts[3], parts[4:]
            prefix = f"layer_{stage + 1}.{idx}."
            if mod in conv:
                new = prefix + f"{conv[mod]}.block.{'conv' if rest[0] == 'conv' else 'norm'}.{'.'.join(rest[1:])}"
            elif mod == "conv_1x1":
                new = prefix + "local_rep.conv_1x1.block.conv.weight"
            elif mod == "norm":
                depth = len(model.stages[stage][int(idx)].transformer)
                new = prefix + f"global_rep.{depth}.{rest[0]}"
            else:  # transformer.L.<sub>
                sub = ".".join(rest[1:-1])
                new = prefix + f"global_rep.{rest[0]}.{layer[sub]}.{rest[-1]}"
        out[new] = v
    return out


def test_loads_cvnets_layout(tmp_path):
    src = mobilevision.create_model("mobilevit_xxs").eval()
    state = _to_cvnets(src.state_dict(), src)
    assert "layer_3.1.global_rep.0.pre_norm_mha.1.qkv_proj.weight" in state and "conv_1.block.norm.weight" in state
    torch.save(state, tmp_path / "cvnets.pt")
    dst = mobilevision.create_model("mobilevit_xxs", checkpoint_path=tmp_path / "cvnets.pt").eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_classifier_protocol_and_features():
    assert_classifier_protocol("mobilevit_xxs", size=64, reductions=[2, 4, 8, 16, 32])
    fx = mobilevision.create_model("mobilevit_s", features_only=True).eval()
    assert fx.channels() == [32, 64, 96, 128, 640]


@pytest.mark.parametrize("name", VARIANTS)
def test_train_224_and_eval_160_320(name):
    assert_trains_and_runs_at_other_sizes(name)
