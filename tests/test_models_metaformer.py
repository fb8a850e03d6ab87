"""MetaFormer (PoolFormer v1/v2, ConvFormer, CAFormer): published figures, timm parity, official PoolFormer
layout, features, the hybrid-stage PoolFormer training on digits."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import mobilevision
from test_models_convnext import perturb_
from zoo_checks import assert_classifier_protocol, assert_matches_published

V1 = ["poolformer_s12", "poolformer_s24", "poolformer_s36", "poolformer_m36", "poolformer_m48"]
BASELINES = ["poolformerv2_s12", "convformer_s18", "caformer_s18"]
HYBRID = ("pool", "pool", "attention", "attention")


@pytest.mark.parametrize("name", V1 + BASELINES)
def test_matches_published(name):
    assert_matches_published(name)


@pytest.mark.parametrize("name", V1 + BASELINES)
def test_timm_parity(name, tmp_path):
    """Logits for the baselines; forward_features for PoolFormer v1 (timm pools before its head norm)."""
    import timm

    ref = perturb_(timm.create_model(name, pretrained=False)).eval()
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    model = mobilevision.create_model(name, checkpoint_path=path).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        if name in V1:
            diff = (model.forward_features(x) - ref.forward_features(x)).abs().max().item()
        else:
            diff = (model(x) - ref(x)).abs().max().item()
    assert diff <= 1e-4, f"{name}: max abs diff {diff:.2e} vs timm"


def _official_poolformer_state(model) -> dict[str, torch.Tensor]:
    """Our weights under sail-sg/poolformer's key names (models/poolformer.py: PoolFormer)."""
    sd = model.state_dict()
    out = {"patch_embed.proj.weight": sd["stem.conv.weight"], "patch_embed.proj.bias": sd["stem.conv.bias"],
           "norm.weight": sd["head.norm.weight"], "norm.bias": sd["head.norm.bias"],
           "head.weight": sd["head.fc.weight"], "head.bias": sd["head.fc.bias"]}
    for i, stage in enumerate(model.stages):
        if i > 0:
            for t in ("weight", "bias"):
                out[f"network.{2 * i - 1}.proj.{t}"] = sd[f"stages.{i}.downsample.conv.{t}"]
        for j in range(len(stage.blocks)):
            ours, theirs = f"stages.{i}.blocks.{j}.", f"network.{2 * i}.{j}."
            for m in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                for t in ("weight", "bias"):
                    out[f"{theirs}{m}.{t}"] = sd[f"{ours}{m}.{t}"]
            out[theirs + "layer_scale_1"] = sd[ours + "layer_scale1.scale"]
            out[theirs + "layer_scale_2"] = sd[ours + "layer_scale2.scale"]
    return out


def test_official_poolformer_layout_and_head(tmp_path):
    src = perturb_(mobilevision.create_model("poolformer_s12")).eval()
    official = _official_poolformer_state(src)
    assert len(official) == len(src.state_dict())
    torch.save(official, tmp_path / "poolformer_s12.pth.tar")
    dst = mobilevision.create_model("poolformer_s12", checkpoint_path=tmp_path / "poolformer_s12.pth.tar").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = dst(x)
        assert torch.equal(src(x), logits)
        # the official head: GroupNorm(1) over the whole (C, H, W) map, then the spatial mean, then Linear
        feat = dst.forward_features(x)
        pooled = F.group_norm(feat, 1, official["norm.weight"], official["norm.bias"], 1e-5).mean((2, 3))
        assert torch.allclose(logits, F.linear(pooled, official["head.weight"], official["head.bias"]), atol=1e-5)
    own = src.state_dict()
    assert src.checkpoint_filter(own, src) == own  # our (and timm's) layout passes unchanged


@pytest.mark.parametrize("name,overrides", [
    ("poolformer_s12", {}), ("caformer_s18", {}), ("poolformer_s12", {"token_mixers": HYBRID}),
])
def test_classifier_protocol(name, overrides, monkeypatch):
    if overrides:  # the protocol check builds the model itself: route the overrides through create_model
        real = mobilevision.create_model
        monkeypatch.setattr(mobilevision, "create_model", lambda n, **kw: real(n, **{**overrides, **kw}))
    assert_classifier_protocol(name, size=64, reductions=[4, 8, 16, 32])


def test_token_mixer_overrides_and_errors():
    m = mobilevision.create_model("poolformer_s12", token_mixers=("identity", "pool", "random", "attention"),
                                  img_size=64).eval()
    assert [type(s.blocks[0].token_mixer).__name__ for s in m.stages] == \
        ["IdentityMixer", "Pooling", "RandomMixing", "AttentionMixer"]
    assert m.stages[3].channels_last and not m.stages[2].channels_last
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(ValueError, match="unknown token mixer 'conv'"):
        mobilevision.create_model("poolformer_s12", token_mixers=("pool", "conv", "pool", "pool"))
    with pytest.raises(ValueError, match="one mixer per stage"):
        mobilevision.create_model("poolformer_s12", token_mixers=("pool", "pool"))
    with pytest.raises(ValueError, match="unknown MetaFormer head"):
        mobilevision.create_model("poolformer_s12", head="avg")


def test_hybrid_poolformer_trains_on_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:256] / 16.0  # (N, 8, 8) in [0, 1]
    x = F.interpolate(images[:, None], size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = (x - 0.5) / 0.5
    y = torch.tensor(digits.target[:256])
    model = mobilevision.create_model("poolformer_s12", num_classes=10, token_mixers=HYBRID, drop_path_rate=0.1)
    assert model.stages[2].channels_last and model.stages[3].channels_last
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    model.train()
    losses = []
    for epoch in range(3):
        for b in range(4):
            xb, yb = x[b * 64:(b + 1) * 64], y[b * 64:(b + 1) * 64]
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert all(torch.isfinite(torch.tensor(losses))) and last < 0.8 * first, losses
