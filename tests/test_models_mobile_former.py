"""Mobile-Former: published figures, bridge formulas, the released checkpoint layout, the protocol."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import mobilevision
from mobilevision.models.mobile_former import MOBILE_FORMER_CONFIGS, FormerToMobile, MobileToFormer
from zoo_checks import assert_classifier_protocol, assert_matches_published, assert_trains_and_runs_at_other_sizes

VARIANTS = list(MOBILE_FORMER_CONFIGS)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", VARIANTS)
def test_matches_published(name):
    assert_matches_published(name)


# ------------------------------------------------------------------------------------------ bridges
def _bridge_inputs(c=8, d=12, t=3, h=4, w=5):
    torch.manual_seed(3)
    return torch.randn(2, c, h, w), torch.randn(2, t, d)


def test_bridge_attention_rows_sum_to_one():
    x, z = _bridge_inputs()
    m2f, f2m = MobileToFormer(8, 12), FormerToMobile(8, 12)
    for mod in (m2f, f2m):
        for p in mod.parameters():
            torch.nn.init.normal_(p)
    logits, _ = m2f.attention_logits(x, z)  # (B, heads, T, HW)
    assert logits.shape == (2, 2, 3, 20)
    torch.testing.assert_close(logits.softmax(-1).sum(-1), torch.ones(2, 2, 3))
    attn = f2m.attention(x, z)  # (B, heads, HW, T)
    assert attn.shape == (2, 2, 20, 3)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, 20))
    # Mobile<-Former adds attention @ values to the map, head by head.
    v = f2m.v(z).reshape(2, 3, 2, 4).transpose(1, 2)  # (B, heads, T, C/heads)
    added = (attn @ v).transpose(-1, -2).reshape(2, 8, 4, 5)
    torch.testing.assert_close(f2m(x, z), x + added)


def test_single_token_mobile_to_former_is_weighted_pixel_average():
    x, z = _bridge_inputs(t=1)
    m2f = MobileToFormer(8, 12)
    for p in m2f.parameters():
        torch.nn.init.normal_(p, std=0.5)
    out, _ = m2f(x, z)
    pixels = x.flatten(2)  # (B, C, HW)
    q = m2f.q(z[:, 0])  # (B, C)
    avg = []
    for h in range(2):  # per head: softmax over pixels of q_h . x_h(p) / sqrt(C/2)
        sl = slice(4 * h, 4 * h + 4)
        wts = torch.softmax((q[:, None, sl] @ pixels[:, sl]).squeeze(1) / 2.0, dim=-1)  # (B, HW)
        avg.append((pixels[:, sl] * wts[:, None]).sum(-1))  # (B, C/2)
    pooled = torch.cat(avg, dim=1) * 2 * F.hardsigmoid(m2f.gate(z[:, 0]))
    ref = F.layer_norm(z[:, 0] + m2f.proj(pooled), (12,), m2f.norm.weight, m2f.norm.bias)
    torch.testing.assert_close(out[:, 0], ref)
    # A constant map: every weighting gives the pixel itself.
    const = x[:, :, :1, :1].expand(-1, -1, 4, 5).contiguous()
    out_c, _ = m2f(const, z)
    pix = const[:, :, 0, 0] * 2 * F.hardsigmoid(m2f.gate(z[:, 0]))
    ref_c = F.layer_norm(z[:, 0] + m2f.proj(pix), (12,), m2f.norm.weight, m2f.norm.bias)
    torch.testing.assert_close(out_c[:, 0], ref_c)


# ---------------------------------------------------------------- the released key layout, independently
def _bn_keys(prefix, n):
    return {f"{prefix}.weight": ("bnw", n), f"{prefix}.bias": ("small", n), f"{prefix}.running_mean": ("small", n),
            f"{prefix}.running_var": ("bnv", n), f"{prefix}.num_batches_tracked": ("int", None)}


def _ln_keys(prefix, n):
    return {f"{prefix}.weight": ("bnw", n), f"{prefix}.bias": ("small", n)}


def _lin_keys(prefix, out, inp):
    return {f"{prefix}.weight": ("w", (out, inp)), f"{prefix}.bias": ("small", out)}


def _released_shapes(cfg):
    """Key -> shape of the AAboys/MobileFormer state dict (names from its mobile_former.py / dna_blocks.py)."""
    d, g, keys = cfg.token_dim, cfg.groups, {}
    keys["tokens.weight"] = ("tok", (cfg.token_num, d))
    keys["stem.0.weight"] = ("w", (cfg.stem_chs, 3, 3, 3))
    keys.update(_bn_keys("stem.1", cfg.stem_chs))
    inp = cfg.stem_chs
    for i, row in enumerate(cfg.blocks):
        p, oup, e = f"features.{i}", row.out_chs, row.expansion
        if row.kind == "lite":
            keys[f"{p}.conv.0.weight"] = ("w", (inp * e, 1, 3, 3))
            keys.update(_bn_keys(f"{p}.conv.1", inp * e))
            keys[f"{p}.conv.4.weight"] = ("w", (oup, inp * e // g, 1, 1))
            keys.update(_bn_keys(f"{p}.conv.5", oup))
            inp = oup
            continue

        def hyper(name, n, p=p):
            return {**_lin_keys(f"{p}.{name}.hyper.0", d // 4, d), **_lin_keys(f"{p}.{name}.hyper.2", 2 * n, d // 4)}

        if row.kind == "down":
            h1, h2 = inp * e, oup * 4
            keys[f"{p}.conv1.0.weight"] = ("w", (h1, 1, 3, 3))
            keys.update(_bn_keys(f"{p}.conv1.1", h1))
            keys.update(hyper("hyper1", h1))
            keys[f"{p}.conv2.0.weight"] = ("w", (oup, h1 // g, 1, 1))
            keys.update(_bn_keys(f"{p}.conv2.1", oup))
            keys[f"{p}.conv3.0.weight"] = ("w", (h2, 1, 3, 3))
            keys.update(_bn_keys(f"{p}.conv3.1", h2))
            keys.update(hyper("hyper3", h2))
            keys[f"{p}.conv4.0.weight"] = ("w", (oup, h2 // g, 1, 1))
            keys.update(_bn_keys(f"{p}.conv4.1", oup))
        else:
            h = inp * e
            keys[f"{p}.conv1.0.weight"] = ("w", (h, inp // g, 1, 1))
            keys.update(_bn_keys(f"{p}.conv1.1", h))
            keys.update(hyper("hyper1", h))
            keys[f"{p}.conv2.0.weight"] = ("w", (h, 1, 3, 3))
            keys.update(_bn_keys(f"{p}.conv2.1", h))
            keys.update(hyper("hyper2", h))
            keys[f"{p}.conv3.0.weight"] = ("w", (oup, h // g, 1, 1))
            keys.update(_bn_keys(f"{p}.conv3.1", oup))
        keys.update(_lin_keys(f"{p}.local_global.alpha.0", inp, d))
        keys.update(_lin_keys(f"{p}.local_global.q", inp, d))
        keys.update(_lin_keys(f"{p}.local_global.proj", d, inp))
        keys.update(_ln_keys(f"{p}.local_global.layer_norm", d))
        keys.update(_lin_keys(f"{p}.global_block.ffn.0", 2 * d, d))
        keys.update(_lin_keys(f"{p}.global_block.ffn.2", d, 2 * d))
        keys.update(_ln_keys(f"{p}.global_block.ffn_norm", d))
        keys.update(_lin_keys(f"{p}.global_block.q", d, d))
        keys.update(_lin_keys(f"{p}.global_block.channel_mlp", d, d))
        keys.update(_ln_keys(f"{p}.global_block.layer_norm", d))
        keys.update(_lin_keys(f"{p}.global_local.k", oup, d))
        keys.update(_lin_keys(f"{p}.global_local.proj", oup, d))
        inp = oup
    keys.update(_lin_keys("local_global.alpha.0", inp, d))
    keys.update(_lin_keys("local_global.q", inp, d))
    keys.update(_lin_keys("local_global.proj", d, inp))
    keys.update(_ln_keys("local_global.layer_norm", d))
    keys["classifier.conv.1.weight"] = ("w", (6 * inp, inp // g, 1, 1))
    keys.update(_bn_keys("classifier.conv.2", 6 * inp))
    keys.update(_lin_keys("classifier.fc.0", cfg.num_features, 6 * inp + d))
    keys.update(_bn_keys("classifier.fc.1", cfg.num_features))
    keys.update(_lin_keys("classifier.classifier.1", 1000, cfg.num_features))
    return keys


def _random_released_state(cfg, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, (kind, shape) in _released_shapes(cfg).items():
        if kind == "int":
            out[key] = torch.tensor(0)
        elif kind == "w":
            fan_in = int(torch.tensor(shape[1:]).prod())
            out[key] = torch.randn(shape, generator=gen) * fan_in ** -0.5
        elif kind == "tok":
            out[key] = torch.randn(shape, generator=gen)
        elif kind == "bnw":
            out[key] = torch.rand(shape, generator=gen) + 0.5
        elif kind == "bnv":
            out[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(shape, generator=gen) * 0.1
    return out


def _reference_forward(sd, cfg, x):
    """The released network's eval forward, written from its key names; tokens kept (T, B, d) as it does."""
    g, d = cfg.groups, cfg.token_dim

    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"])

    lin = lambda t, p: F.linear(t, sd[p + ".weight"], sd[p + ".bias"])  # noqa: E731
    ln = lambda t, p: F.layer_norm(t, (d,), sd[p + ".weight"], sd[p + ".bias"])  # noqa: E731
    hsig = lambda t: F.relu6(t + 3) / 6  # noqa: E731

    def conv(t, p, stride=1, groups=1):
        w = sd[p + ".weight"]
        return F.conv2d(t, w, None, stride, w.shape[-1] // 2, groups=groups)

    def shuffle(t, groups):
        b, c, h, w = t.shape
        return t.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)

    def dyrelu(t, z, p):
        hp = hsig(lin(F.relu(lin(z[0], p + ".hyper.0")), p + ".hyper.2"))[:, :, None, None]
        a1, a2 = torch.split(hp, t.shape[1], dim=1)
        return torch.max(t * ((a1 - 0.5) * 2 + 1), t * ((a2 - 0.5) * 2))

    def local_global(t, z, p):
        bs, c, h, w = t.shape
        q = lin(z, p + ".q").view(-1, bs, 2, c // 2).permute(1, 2, 0, 3)
        k = t.view(bs, 2, c // 2, h * w)
        out = ((q @ k) * (c // 2) ** -0.5).softmax(-1) @ k.transpose(-1, -2)
        out = out.permute(2, 0, 1, 3).reshape(-1, bs, c) * hsig(lin(z, p + ".alpha.0")) * 2
        return ln(z + lin(out, p + ".proj"), p + ".layer_norm")

    def global_block(z, p):
        T, bs, _ = z.shape
        q = lin(z, p + ".q").view(T, bs, 4, -1).permute(1, 2, 0, 3)
        k = z.permute(1, 2, 0).reshape(bs, 4, -1, T)
        out = ((q @ k) * (d // 4) ** -0.5).softmax(-1) @ k.transpose(-1, -2)
        z = ln(z + lin(out.permute(2, 0, 1, 3).reshape(T, bs, -1), p + ".channel_mlp"), p + ".layer_norm")
        return ln(z + lin(F.gelu(lin(z, p + ".ffn.0")), p + ".ffn.2"), p + ".ffn_norm")

    def global_local(t, z, p):
        bs, c, h, w = t.shape
        T = z.shape[0]
        v = lin(z, p + ".proj").permute(1, 2, 0)
        q = t.view(bs, 2, c // 2, h * w).transpose(-1, -2)
        k = lin(z, p + ".k").permute(1, 2, 0).reshape(bs, 2, c // 2, T)
        out = ((q @ k) * (c // 2) ** -0.5).softmax(-1) @ v.reshape(bs, 2, c // 2, T).transpose(-1, -2)
        return t + out.transpose(-1, -2).reshape(bs, c, h, w)

    z = sd["tokens.weight"][None].repeat(x.shape[0], 1, 1).permute(1, 0, 2)
    t = F.relu6(bn(conv(x, "stem.0", 2), "stem.1"))
    for i, row in enumerate(cfg.blocks):
        p, inp = f"features.{i}", t.shape[1]
        if row.kind == "lite":
            y = F.relu6(bn(conv(t, p + ".conv.0", row.stride, inp), p + ".conv.1"))
            y = shuffle(y, inp) if g > 1 else y
            y = bn(conv(y, p + ".conv.4", groups=g), p + ".conv.5")
            t = y + t if y.shape == t.shape else y
            continue
        z = global_block(local_global(t, z, p + ".local_global"), p + ".global_block")
        if row.kind == "down":
            y = bn(conv(t, p + ".conv1.0", row.stride, inp), p + ".conv1.1")
            y = dyrelu(shuffle(y, inp) if g > 1 else y, z, p + ".hyper1")
            y = bn(conv(y, p + ".conv2.0", groups=g), p + ".conv2.1")
            y2 = bn(conv(y, p + ".conv3.0", groups=y.shape[1]), p + ".conv3.1")
            y2 = dyrelu(shuffle(y2, y.shape[1]) if g > 1 else y2, z, p + ".hyper3")
            y = bn(conv(y2, p + ".conv4.0", groups=g), p + ".conv4.1") + y
            t = global_local(y, z, p + ".global_local")
        else:
            y = bn(conv(t, p + ".conv1.0", groups=g), p + ".conv1.1")
            y = dyrelu(shuffle(y, g) if g > 1 else y, z, p + ".hyper1")
            y = dyrelu(bn(conv(y, p + ".conv2.0", groups=y.shape[1]), p + ".conv2.1"), z, p + ".hyper2")
            y = bn(conv(y, p + ".conv3.0", groups=g), p + ".conv3.1")
            y = shuffle(y, g) if g > 1 else y
            t = global_local(y + t if y.shape == t.shape else y, z, p + ".global_local")
    z = local_global(t, z, "local_global")
    y = shuffle(t, g) if g > 1 else t
    y = F.hardswish(F.relu6(bn(conv(y, "classifier.conv.1", groups=g), "classifier.conv.2")).mean((2, 3)))
    y = F.hardswish(bn(lin(torch.cat([y, z[0]], 1), "classifier.fc.0"), "classifier.fc.1"))
    return lin(y, "classifier.classifier.1")


@pytest.mark.parametrize("name", ["mobileformer_26m", "mobileformer_96m"])
def test_loads_released_layout(name, tmp_path):
    cfg = MOBILE_FORMER_CONFIGS[name]
    state = _random_released_state(cfg)
    save_file(state, str(tmp_path / "released.safetensors"))
    model = mobilevision.create_model(name, checkpoint_path=tmp_path / "released.safetensors").eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref = _reference_forward(state, cfg, x)
        out = model(x)
    assert ref.abs().max() > 1e-2  # a live signal, not a collapsed one
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # Our own layout passes through unchanged and round-trips.
    save_file(model.state_dict(), str(tmp_path / "ours.safetensors"))
    again = mobilevision.create_model(name, checkpoint_path=tmp_path / "ours.safetensors").eval()
    with torch.no_grad():
        assert torch.equal(again(x), out)


def test_released_layout_with_unknown_key_is_refused(tmp_path):
    state = _random_released_state(MOBILE_FORMER_CONFIGS["mobileformer_26m"])
    state["features.3.global_block.bogus.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="bogus"):
        mobilevision.create_model("mobileformer_26m", checkpoint_path=tmp_path / "bad.safetensors")


# ------------------------------------------------------------------------------------------ protocol
@pytest.mark.parametrize("name", ["mobileformer_26m", "mobileformer_96m"])
def test_classifier_protocol_and_features(name):
    assert_classifier_protocol(name, size=64, reductions=[2, 4, 8, 16, 32])


def test_forward_head_takes_what_forward_features_returns():
    """The generic protocol: forward_head(forward_features(x)) is the forward pass, tokens included."""
    model = mobilevision.create_model("mobileformer_26m").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.map.shape == (1, 96, 2, 2) and feats.tokens.shape == (1, 3, 128)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.num_features)
        with pytest.raises(ValueError, match="tokens"):
            model.forward_head(feats.map)


def test_spatial_aware_dyrelu_variant_runs():
    model = mobilevision.create_model("mobileformer_52m", num_classes=5, token_id=-1)
    model(torch.randn(2, 3, 96, 96)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", VARIANTS)
def test_train_224_and_eval_160_320(name):
    assert_trains_and_runs_at_other_sizes(name)  # batch 2 in training: the head's BatchNorm1d needs it
