"""Dynamic ReLU layers against their formulas."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mobilevision.layers.dynamic_relu import DynamicReLU, SpatialDynamicReLU, TokenDynamicReLU


@pytest.mark.parametrize("variant", ["A", "B"])
def test_dyrelu_is_relu_at_init(variant):
    layer = DynamicReLU(16, variant=variant)
    x = torch.randn(2, 16, 5, 7)
    assert torch.equal(layer(x), F.relu(x))


def test_dyrelu_c_is_relu_times_spatial_gate_at_init():
    layer = DynamicReLU(8, variant="C", temperature=10.0).eval()
    x = torch.randn(2, 8, 4, 6)
    z = layer.spatial(x).flatten(1) / 10.0
    pi = torch.clamp(torch.softmax(z, dim=1) * (24 / 3.0), max=1.0).reshape(2, 1, 4, 6)
    torch.testing.assert_close(layer(x), F.relu(x) * pi)
    assert (pi > 0).all() and (pi <= 1).all()


@pytest.mark.parametrize("variant", ["A", "B"])
def test_dyrelu_matches_formula(variant):
    c, k = 6, 2
    layer = DynamicReLU(c, variant=variant, k=k, lambda_a=1.0, lambda_b=0.5)
    torch.nn.init.normal_(layer.fc2.weight, std=1.0)
    torch.nn.init.normal_(layer.fc2.bias, std=1.0)
    x = torch.randn(3, c, 4, 4)
    theta = layer.fc2(F.relu(layer.fc1(x.mean((2, 3)))))
    res = 2 * torch.sigmoid(theta) - 1
    width = 1 if variant == "A" else c
    da, db = res[:, : k * width].reshape(3, k, width), res[:, k * width:].reshape(3, k, width)
    alpha = torch.tensor([1.0, 0.0])[None, :, None]
    a, b = alpha + 1.0 * da, 0.5 * db
    pieces = [x * a[:, i, :, None, None] + b[:, i, :, None, None] for i in range(k)]
    torch.testing.assert_close(layer(x), torch.maximum(*pieces))
    assert not torch.allclose(layer(x), F.relu(x))


def test_dyrelu_rejects_bad_variant():
    with pytest.raises(ValueError, match="'D'"):
        DynamicReLU(4, variant="D")


def test_token_dyrelu_is_relu_at_init_and_matches_formula():
    layer = TokenDynamicReLU(10, token_dim=16)
    x, tokens = torch.randn(2, 10, 3, 3), torch.randn(2, 4, 16)
    assert torch.equal(layer(x, tokens), F.relu(x))
    torch.nn.init.normal_(layer.fc2.weight, std=2.0)
    h = F.relu6(layer.fc2(F.relu(layer.fc1(tokens[:, 0]))) + 3) / 6  # hard-sigmoid of token 0 only
    a1, a2 = (h[:, :10] - 0.5) * 2 + 1, (h[:, 10:] - 0.5) * 2
    assert a1.min() >= 0 and a1.max() <= 2 and a2.min() >= -1 and a2.max() <= 1
    ref = torch.maximum(x * a1[:, :, None, None], x * a2[:, :, None, None])
    torch.testing.assert_close(layer(x, tokens), ref)
    tokens2 = tokens.clone()
    tokens2[:, 1:] = torch.randn(2, 3, 16)  # other tokens do not matter
    torch.testing.assert_close(layer(x, tokens2), ref)


def test_spatial_token_dyrelu_mixes_token_coefficients():
    torch.manual_seed(1)
    spatial = TokenDynamicReLU(6, token_dim=8, token_id=-1)
    torch.nn.init.normal_(spatial.fc2.weight, std=2.0)
    x, tokens = torch.randn(2, 6, 4, 5), torch.randn(2, 3, 8)
    # A one-hot mix on token j everywhere equals the token-j form with the same weights.
    for j in range(3):
        single = TokenDynamicReLU(6, token_dim=8, token_id=j)
        single.load_state_dict(spatial.state_dict())
        onehot = torch.zeros(2, 3, 4, 5)
        onehot[:, j] = 1
        torch.testing.assert_close(spatial(x, tokens, onehot), single(x, tokens))
    # A general mix: per-pixel coefficients are the mix-weighted average of the per-token ones.
    mix = torch.softmax(torch.randn(2, 3, 4, 5), dim=1)
    h = spatial.hyper(tokens)  # (B, T, 2C)
    hp = torch.einsum("btc,bthw->bchw", h, mix)
    a1, a2 = (hp[:, :6] - 0.5) * 2 + 1, (hp[:, 6:] - 0.5) * 2
    torch.testing.assert_close(spatial(x, tokens, mix), torch.maximum(x * a1, x * a2))
    with pytest.raises(ValueError, match="mix"):
        spatial(x, tokens)


def test_spatial_dyrelu_weights_sum_to_one_over_tokens_at_every_position():
    torch.manual_seed(2)
    logits = torch.randn(2, 7, 6, 5) * 5
    w = SpatialDynamicReLU.mixing_weights(logits, (6, 5))
    assert w.shape == (2, 7, 6, 5) and (w >= 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(2, 6, 5))
    assert w.std(1).min() > 0.01  # not uniform: the weights depend on the position's logits
    pooled = SpatialDynamicReLU.mixing_weights(logits, (3, 2))  # a strided block reads pooled logits
    torch.testing.assert_close(pooled.sum(1), torch.ones(2, 3, 2))


def test_spatial_dyrelu_is_the_token_form_with_softmax_mix():
    torch.manual_seed(3)
    layer = SpatialDynamicReLU(6, token_dim=8)
    x, tokens, logits = torch.randn(2, 6, 4, 5), torch.randn(2, 3, 8), torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(layer(x, tokens, logits), F.relu(x))  # ReLU at initialisation (up to rounding)
    torch.nn.init.normal_(layer.fc2.weight, std=2.0)
    ref = TokenDynamicReLU(6, token_dim=8, token_id=-1)
    ref.load_state_dict(layer.state_dict())
    out = layer(x, tokens, logits)
    torch.testing.assert_close(out, ref(x, tokens, torch.softmax(logits, 1)))
    # a position's slopes follow the token its logits favour
    sharp = torch.full((2, 3, 4, 5), -30.0)
    sharp[:, 1] = 30.0
    single = TokenDynamicReLU(6, token_dim=8, token_id=1)
    single.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x, tokens, sharp), single(x, tokens))
    with pytest.raises(ValueError, match="mix_logits"):
        layer(x, tokens)
    with pytest.raises(ValueError, match="disagree"):
        layer(x, tokens, torch.randn(2, 4, 4, 5))
