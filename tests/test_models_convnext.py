"""ConvNeXt V1 / V2: published figures, timm parity, official layouts, features, GRN in low precision."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import mobilevision
from mobilevision.models.registry import get_config
from zoo_checks import assert_classifier_protocol, assert_matches_published

V1 = ["convnext_tiny", "convnext_small", "convnext_base", "convnext_large", "convnext_xlarge"]
V2 = ["convnextv2_atto", "convnextv2_femto", "convnextv2_pico", "convnextv2_nano", "convnextv2_tiny",
      "convnextv2_base", "convnextv2_large", "convnextv2_huge"]
# timm parity for all small models and convnextv2_base as the representative of the 27-deep configuration;
# convnext_small/base/large/xlarge and convnextv2_large/huge share that code path with other widths and are
# only counted (meta device), to keep CI memory and time low.
PARITY = ["convnext_tiny", "convnextv2_atto", "convnextv2_femto", "convnextv2_pico", "convnextv2_nano",
          "convnextv2_tiny", "convnextv2_base"]


def perturb_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give constant-initialised params (layer-scale 1e-6, GRN zeros, norm ones/zeros) random values so that a
    mis-mapped or ignored one changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1 and p.min() != p.max():
                continue
            c = p.flatten()[0].item()
            if c == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            else:
                base = c if abs(c) >= 0.1 else 0.2
                p.copy_(base * (0.5 + torch.rand(p.shape, generator=g)))
    return model


def timm_parity(name: str, tmp_path, size: int = 64, fmt: str = "safetensors") -> float:
    import timm

    ref_model = perturb_(timm.create_model(name, pretrained=False)).eval()
    state = {k: v.contiguous() for k, v in ref_model.state_dict().items()}
    path = tmp_path / f"{name}.{fmt}"
    save_file(state, str(path)) if fmt == "safetensors" else torch.save({"state_dict": state}, path)
    model = mobilevision.create_model(name, checkpoint_path=path).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (model(x) - ref_model(x)).abs().max().item()
    return diff


@pytest.mark.parametrize("name", V1 + V2)
def test_matches_published(name):
    assert_matches_published(name)


@pytest.mark.parametrize("name", PARITY)
def test_timm_parity(name, tmp_path):
    diff = timm_parity(name, tmp_path, fmt="pth" if name == "convnextv2_atto" else "safetensors")
    assert diff <= 1e-4, f"{name}: max abs diff {diff:.2e} vs timm"


def _official_state(model: torch.nn.Module, v2: bool) -> dict[str, torch.Tensor]:
    """Our weights under the facebookresearch/ConvNeXt(-V2) key names (models/convnext*.py)."""
    sd = model.state_dict()
    out = {
        "downsample_layers.0.0.weight": sd["stem.0.weight"], "downsample_layers.0.0.bias": sd["stem.0.bias"],
        "downsample_layers.0.1.weight": sd["stem.1.weight"], "downsample_layers.0.1.bias": sd["stem.1.bias"],
        "norm.weight": sd["head.norm.weight"], "norm.bias": sd["head.norm.bias"],
        "head.weight": sd["head.fc.weight"], "head.bias": sd["head.fc.bias"],
    }
    for i, stage in enumerate(model.stages):
        if i > 0:
            for j in (0, 1):
                for t in ("weight", "bias"):
                    out[f"downsample_layers.{i}.{j}.{t}"] = sd[f"stages.{i}.downsample.{j}.{t}"]
        for j in range(len(stage.blocks)):
            ours, theirs = f"stages.{i}.blocks.{j}.", f"stages.{i}.{j}."
            for a, b in (("conv_dw", "dwconv"), ("norm", "norm"), ("mlp.fc1", "pwconv1"), ("mlp.fc2", "pwconv2")):
                for t in ("weight", "bias"):
                    out[f"{theirs}{b}.{t}"] = sd[f"{ours}{a}.{t}"]
            if v2:
                out[theirs + "grn.gamma"] = sd[ours + "mlp.grn.weight"].reshape(1, 1, 1, -1)
                out[theirs + "grn.beta"] = sd[ours + "mlp.grn.bias"].reshape(1, 1, 1, -1)
            else:
                out[theirs + "gamma"] = sd[ours + "gamma"]
    return out


@pytest.mark.parametrize("name", ["convnext_tiny", "convnextv2_atto"])
def test_official_layout_loads(name, tmp_path):
    kw = {"depths": (2, 2, 2, 2)} if name == "convnext_tiny" else {}  # shallower V1 to save time; same key scheme
    src = perturb_(mobilevision.create_model(name, **kw)).eval()
    official = _official_state(src, v2=name.startswith("convnextv2"))
    assert len(official) == len(src.state_dict())
    torch.save({"model": official, "epoch": 299}, tmp_path / "official.pth")
    dst = mobilevision.create_model(name, checkpoint_path=tmp_path / "official.pth", **kw).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))
    # our own layout passes through the filter unchanged
    own = src.state_dict()
    assert src.checkpoint_filter(own, src) == own


@pytest.mark.parametrize("name,size", [("convnext_tiny", 32), ("convnextv2_atto", 64)])
def test_classifier_protocol(name, size):
    assert_classifier_protocol(name, size=size, reductions=[4, 8, 16, 32])


def test_head_init_scale_and_drop_path_schedule():
    torch.manual_seed(3)
    a = mobilevision.create_model("convnextv2_atto", head_init_scale=0.001)
    torch.manual_seed(3)
    b = mobilevision.create_model("convnextv2_atto")
    assert torch.allclose(a.head.fc.weight, b.head.fc.weight * 0.001) and b.head.fc.weight.abs().max() > 0
    m = mobilevision.create_model("convnext_tiny", drop_path_rate=0.3)
    rates = [blk.drop_path.drop_prob if hasattr(blk.drop_path, "drop_prob") else 0.0
             for st in m.stages for blk in st.blocks]
    assert len(rates) == 18 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    assert rates == pytest.approx(torch.linspace(0, 0.3, 18).tolist(), abs=1e-6)
    assert m.stages[0].blocks[0].gamma.eq(1e-6).all()
    v2 = mobilevision.create_model("convnextv2_atto")
    assert v2.stages[0].blocks[0].gamma is None
    with pytest.raises(ValueError, match="kernel_size"):
        mobilevision.create_model("convnext_tiny", kernel_size=4)


def _random_on_cpu(name: str, **overrides) -> torch.nn.Module:
    """Build on the meta device, then fill with random values: much cheaper than trunc-normal init."""
    with torch.device("meta"):
        model = mobilevision.create_model(name, **overrides)
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.ndim > 1:
                p.normal_(0, 0.02, generator=g)
            elif "norm" in n and n.endswith("weight"):
                p.normal_(1.0, 0.1, generator=g)
            else:  # biases and GRN weight/bias: non-zero so that GRN really acts
                p.normal_(0, 0.2, generator=g)
    return model.eval()


# (input size, depth override). Default size for atto..nano; tiny at 128 px and base at 32 px; large and huge
# at 32 px with their real widths but shallower stages: bf16 matmuls are emulated (slow) on CPUs without
# AVX512-BF16, and the full huge takes ~1 min there. GRN's behaviour depends on the widths, not the depth.
BF16_CASES = {"convnextv2_atto": (224, None), "convnextv2_femto": (224, None), "convnextv2_pico": (224, None),
              "convnextv2_nano": (224, None), "convnextv2_tiny": (128, None), "convnextv2_base": (32, None),
              "convnextv2_large": (32, (1, 1, 3, 1)), "convnextv2_huge": (32, (1, 1, 3, 1))}


@pytest.mark.parametrize("name", V2)
def test_grn_bf16_autocast_finite(name):
    assert get_config(name).input_size[-1] == 224
    size, depths = BF16_CASES[name]
    model = _random_on_cpu(name, **({"depths": depths} if depths else {}))
    x = torch.randn(1, 3, size, size) * 3
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all(), name


def test_float16_cast_close_to_float32():
    model = _random_on_cpu("convnextv2_atto")
    x = torch.randn(1, 3, 224, 224) * 3
    with torch.no_grad():
        ref = model(x)
        out = model.half()(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    rel = ((out.float() - ref).abs().max() / ref.abs().max()).item()
    assert rel < 2e-2, rel
