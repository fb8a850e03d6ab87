"""The one-of-each layers: create_act, drop_path_rates, init_weights, Attention, ClassifierHead, ConvNormAct."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilevision.layers import (
    Attention, ClassifierHead, ConvNormAct, StarReLU, create_act, drop_path_rates, init_weights,
)
from mobilevision.layers.norms import GroupNorm1


def test_create_act_names_classes_and_errors():
    assert isinstance(create_act("star_relu"), StarReLU)
    assert isinstance(create_act("hard_swish"), nn.Hardswish) and create_act("relu").inplace
    assert not create_act("relu", inplace=False).inplace
    assert isinstance(create_act(None), nn.Identity) and isinstance(create_act(nn.GELU), nn.GELU)
    x = torch.linspace(-2, 2, 9)
    assert torch.equal(create_act("squared_relu")(x), F.relu(x) ** 2)
    with pytest.raises(ValueError, match="unknown activation 'swishh'.*star_relu"):
        create_act("swishh")


def test_drop_path_rates_schedules():
    a, b = drop_path_rates(0.3, [1, 2]), drop_path_rates(0.3, [1, 2], endpoint=False)
    assert a[0] == [0.0] and a[1] == pytest.approx([0.15, 0.3])  # linspace(0, rate, N)
    assert b[0] == [0.0] and b[1] == pytest.approx([0.1, 0.2])  # rate * i / N (EfficientNet)
    assert drop_path_rates(0.5, [1]) == [[0.0]] and drop_path_rates(0.5, [0, 2])[0] == []


def test_init_weights_schemes():
    conv, lin, bn = nn.Conv2d(8, 16, 3, groups=2, bias=True), nn.Linear(16, 32), nn.BatchNorm2d(16)
    nn.init.constant_(bn.weight, 3.0)
    net = nn.Sequential(conv, bn, lin)
    torch.manual_seed(0)
    init_weights(net, "trunc_normal")
    assert lin.weight.std().item() == pytest.approx(0.02, rel=0.25) and conv.bias.abs().sum() == 0
    assert bn.weight[0] == 3.0  # trunc_normal leaves norms alone
    init_weights(net, "tf_mobilenet")
    assert bn.weight[0] == 1.0 and lin.weight.abs().max() <= 32 ** -0.5
    assert conv.weight.std().item() == pytest.approx((2.0 / (9 * 16 // 2)) ** 0.5, rel=0.2)
    with pytest.raises(ValueError, match="unknown init scheme"):
        init_weights(net, "xavier")


def test_attention_matches_the_formula_and_inner_width():
    attn = Attention(48, num_heads=2, head_dim=32, qkv_bias=False, proj_bias=False).eval()
    assert attn.qkv.out_features == 3 * 64 and attn.proj.in_features == 64 and attn.proj.bias is None
    x = torch.randn(2, 5, 48)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 2, 32).permute(2, 0, 3, 1, 4)
    ref = attn.proj(((q @ k.transpose(-1, -2)) / 32 ** 0.5).softmax(-1).matmul(v).transpose(1, 2).reshape(2, 5, 64))
    torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, num_heads=3)


def test_classifier_head_variants_and_reset():
    x = torch.randn(2, 8, 4, 4)
    gn = GroupNorm1(8)
    first = ClassifierHead(8, 3, norm=gn, norm_first=True).eval()
    torch.testing.assert_close(first(x, pre_logits=True), gn(x).mean((2, 3)))
    ln = nn.LayerNorm(8)
    after = ClassifierHead(8, 3, norm=ln).eval()
    torch.testing.assert_close(after(x, pre_logits=True), ln(x.mean((2, 3))))
    mlp = ClassifierHead(8, 5, fc="mlp", init="trunc_normal")
    assert mlp(x).shape == (2, 5) and mlp.fc.fc1.out_features == 32
    mlp.reset(0)
    assert isinstance(mlp.fc, nn.Identity) and mlp(x).shape == (2, 8)
    with pytest.raises(ValueError, match="num_classes"):
        mlp.reset(-1)
    with pytest.raises(ValueError, match="fc"):
        ClassifierHead(8, 3, fc="conv")


def test_conv_norm_act_names_and_dilation():
    timm_style = ConvNormAct(4, 6, 3, dilation=2, act="relu6", names=("conv", "bn1", "act1"))
    assert list(dict(timm_style.named_children())) == ["conv", "bn1", "act1"] and timm_style.out_channels == 6
    assert timm_style(torch.randn(1, 4, 9, 9)).shape == (1, 6, 9, 9)  # 'same' padding with dilation
    assert [k for k in ConvNormAct(4, 6).state_dict()][:2] == ["conv.weight", "bn.weight"]
