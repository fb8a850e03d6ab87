"""MetaFormer layers: token mixers, norms, activations, layer scale."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mobilevision.layers.activations import SquaredReLU, StarReLU
from mobilevision.layers.layer_scale import LayerScale
from mobilevision.layers.norms import GroupNorm1, LayerNorm2d, channel_layer_norm
from mobilevision.layers.token_mixers import AttentionMixer, Pooling, RandomMixing, SepConv, create_token_mixer


def test_pooling_is_avgpool_minus_input():
    x = torch.randn(2, 4, 5, 6)
    ref = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) - x
    assert torch.allclose(Pooling(4)(x), ref)
    with pytest.raises(ValueError, match="pool_size"):
        Pooling(4, pool_size=2)


def test_attention_matches_explicit_softmax():
    attn = AttentionMixer(64, head_dim=32)
    x = torch.randn(2, 3, 5, 64)  # (B, H, W, C)
    qkv = attn.qkv(x.reshape(2, 15, 64)).reshape(2, 15, 3, 2, 32).permute(2, 0, 3, 1, 4)
    q, k, v = qkv
    w = (q @ k.transpose(-2, -1) / 32 ** 0.5).softmax(-1)
    ref = attn.proj((w @ v).transpose(1, 2).reshape(2, 3, 5, 64))
    assert torch.allclose(attn(x), ref, atol=1e-5)


def test_sepconv_random_mixing_and_factory():
    sep = SepConv(8)
    assert sep(torch.randn(1, 8, 9, 9)).shape == (1, 8, 9, 9)
    assert sep.pwconv1.bias is None and sep.dwconv.groups == 16
    rm = RandomMixing(8, num_tokens=16)
    assert torch.allclose(rm.random_matrix.sum(-1), torch.ones(16)) and not rm.random_matrix.requires_grad
    x = torch.randn(2, 8, 4, 4)
    ref = torch.einsum("mn,bcn->bcm", rm.random_matrix, x.flatten(2)).reshape(2, 8, 4, 4)
    assert torch.allclose(rm(x), ref)
    with pytest.raises(ValueError, match="16 positions"):
        rm(torch.randn(1, 8, 5, 5))
    with pytest.raises(ValueError, match="accepted"):
        create_token_mixer("mixer", 8)


def test_norms_activations_scale():
    x = torch.randn(2, 6, 4, 5)
    gn = GroupNorm1(6, bias=False, eps=1e-6)
    assert gn.bias is None
    assert torch.allclose(gn(x), F.group_norm(x, 1, gn.weight, None, 1e-6))
    gn_cl = GroupNorm1(6, channels_last=True)
    assert torch.allclose(gn_cl(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), GroupNorm1(6)(x), atol=1e-6)
    ln = channel_layer_norm(6, bias=False)
    assert isinstance(ln, LayerNorm2d) and ln.bias is None
    assert torch.allclose(ln(x), F.layer_norm(x.permute(0, 2, 3, 1), (6,), ln.weight, None, 1e-6).permute(0, 3, 1, 2))
    star = StarReLU()
    with torch.no_grad():
        star.scale.fill_(0.5)
        star.bias.fill_(-0.1)
    assert torch.allclose(star(x), 0.5 * F.relu(x) ** 2 - 0.1)
    assert torch.allclose(SquaredReLU()(x), F.relu(x) ** 2)
    ls = LayerScale(6, 1e-5)
    assert torch.allclose(ls(x), x * 1e-5)
    assert torch.allclose(LayerScale(6, 2.0, channels_last=True)(x.permute(0, 2, 3, 1)), 2 * x.permute(0, 2, 3, 1))
