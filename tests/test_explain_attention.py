"""explain.attention: Mobile-Former's captured attention weights are the ones the blocks compute with."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mobilevision
from mobilevision.data.config import resolve_data_config
from mobilevision.deploy.inference import sample_photos
from mobilevision.explain import attention_arrays, capture_mobile_former_attention, plot_attention
from mobilevision.explain.inputs import image_batch
from mobilevision.explain.plotting import display_image
from mobilevision.models.mobile_former import MOBILE_FORMER_CONFIGS, MobileFormerBlock, MobileToFormer

pytestmark = pytest.mark.usefixtures("one_thread")


def _peaky(model: torch.nn.Module) -> torch.nn.Module:
    """Random-init bridges attend almost uniformly (Linear N(0, 0.01)); larger query / key weights make the
    weights far from uniform, so a wrong recomputation cannot pass by averaging evenly."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MobileFormerBlock):
                for lin in (m.mobile_to_former.q, m.former_to_mobile.k):
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 2.0)
            if isinstance(m, MobileToFormer):
                m.q.weight.copy_(torch.randn(m.q.weight.shape, generator=gen) * 2.0)
    return model.eval()


def _photos(model, size=64, names=("chelsea", "coffee")) -> torch.Tensor:
    cfg = resolve_data_config(model, input_size=(size, size))
    return image_batch(list(sample_photos(names).values()), cfg)  # (B, 3, size, size), real photos


def _model(token_num: int | None = None) -> torch.nn.Module:
    cfg = MOBILE_FORMER_CONFIGS["mobileformer_26m"]
    kw = {} if token_num is None else {"cfg": dataclasses.replace(cfg, token_num=token_num)}
    return _peaky(mobilevision.create_model("mobileformer_26m", num_classes=10, **kw))


def _captured(token_num: int | None = None):
    """`_model(token_num)`, what `capture_mobile_former_attention` gives on `_photos`, and what independent hooks
    saw: every bridge's (inputs, output) and the input of Mobile->Former's `proj` (what the block really computed)."""
    model = _model(token_num)
    seen, handles = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, MobileFormerBlock):
            for part in ("mobile_to_former", "former_to_mobile"):
                def hook(m, inputs, output, key=(name, part)):
                    seen[key] = (inputs, output)
                handles.append(getattr(mod, part).register_forward_hook(hook))
            handles.append(mod.mobile_to_former.proj.register_forward_pre_hook(
                lambda m, inputs, key=(name, "proj"): seen.__setitem__(key, inputs[0])))
    blocks, _ = capture_mobile_former_attention(model, _photos(model))
    for h in handles:
        h.remove()
    return model, blocks, seen


def test_rows_are_distributions_with_the_blocks_shapes():
    model, blocks, seen = _captured()
    t = model.tokens.shape[0]
    inner = [b for b in blocks if b.former_to_mobile is not None]
    assert [b.name for b in inner] == [n for n, m in model.named_modules() if isinstance(m, MobileFormerBlock)]
    assert blocks[-1].name == "last_mobile_to_former" and blocks[-1].former_to_mobile is None
    for blk in inner:
        x_in = seen[(blk.name, "mobile_to_former")][0][0]  # the block's input map
        x_out = seen[(blk.name, "former_to_mobile")][0][0]  # the map Mobile<-Former is added to
        assert blk.mobile_to_former.shape == (2, 2, t, *x_in.shape[-2:])
        assert blk.former_to_mobile.shape == (2, 2, *x_out.shape[-2:], t)
        torch.testing.assert_close(blk.mobile_to_former.sum((-2, -1)), torch.ones(2, 2, t), atol=1e-5, rtol=0)
        torch.testing.assert_close(blk.former_to_mobile.sum(-1), torch.ones(2, 2, *x_out.shape[-2:]), atol=1e-5,
                                   rtol=0)
        assert (blk.mobile_to_former >= 0).all() and (blk.former_to_mobile >= 0).all()
    # far from uniform (so the recomputation tests below are not trivially satisfied)
    a = inner[0].mobile_to_former
    assert float(a.amax()) > 5.0 / a[0, 0, 0].numel()


def _pixel_average(mod: MobileToFormer, x: torch.Tensor, tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mobile->Former's gated read rebuilt from captured weights: each token's new value is the weights'
    average of the map's pixels (per head; keys = values = the map's own channels), times the token gate.
    x (B, C, H, W), weights (B, heads, T, H, W) -> (B, T, C), what the block feeds its output projection."""
    b, c, h, w = x.shape
    heads, t = mod.num_heads, tokens.shape[1]
    pixels = x.reshape(b, heads, c // heads, h * w)
    avg = torch.einsum("bhtp,bhcp->bhtc", weights.reshape(b, heads, t, h * w), pixels)
    return avg.transpose(1, 2).reshape(b, t, c) * (2.0 * F.hardsigmoid(mod.gate(tokens)))


@pytest.mark.parametrize("token_num", [1, 3])
def test_mobile_to_former_map_is_the_weights_of_the_blocks_pixel_average(token_num):
    model, blocks, seen = _captured(token_num)
    checked = 0
    for blk in (b for b in blocks if b.former_to_mobile is not None):
        mod = model.get_submodule(blk.name).mobile_to_former
        (x_in, tokens), (tokens_out, _) = seen[(blk.name, "mobile_to_former")]
        assert blk.mobile_to_former.shape[2] == token_num
        with torch.no_grad():
            read = _pixel_average(mod, x_in, tokens, blk.mobile_to_former)
            uniform = _pixel_average(mod, x_in, tokens, torch.full_like(blk.mobile_to_former, 1 / x_in[0, 0].numel()))
            rebuilt = mod.norm(tokens + mod.proj(read))
        torch.testing.assert_close(read, seen[(blk.name, "proj")], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rebuilt, tokens_out, atol=1e-5, rtol=1e-5)  # and so the block's new tokens
        if float(blk.mobile_to_former.amax()) * x_in[0, 0].numel() > 2.0:  # clearly non-uniform weights:
            # then a plain pixel mean is not what the block computed (by 100x the tolerance above)
            assert (uniform - seen[(blk.name, "proj")]).abs().max() > 1e-3
            checked += 1
    assert checked >= 2


def test_former_to_mobile_map_rebuilds_the_blocks_output():
    model, blocks, seen = _captured()
    for blk in (b for b in blocks if b.former_to_mobile is not None):
        mod = model.get_submodule(blk.name).former_to_mobile
        (x_out, tokens), result = seen[(blk.name, "former_to_mobile")]
        b, c, h, w = x_out.shape
        with torch.no_grad():
            v = mod.v(tokens).reshape(b, tokens.shape[1], mod.num_heads, -1).transpose(1, 2)  # (B, heads, T, c)
            read = blk.former_to_mobile.reshape(b, mod.num_heads, h * w, -1) @ v  # (B, heads, HW, c)
        torch.testing.assert_close(x_out + read.transpose(-1, -2).reshape(x_out.shape), result, atol=1e-5, rtol=1e-5)


def test_hooks_leave_the_output_identical_and_are_removed():
    model = _model()
    x = _photos(model)
    with torch.no_grad():
        ref = model(x)
    _, out = capture_mobile_former_attention(model, x)
    assert torch.equal(out, ref)
    assert not any(m._forward_hooks for m in model.modules())


def test_a_cnn_has_no_attention_to_show():
    model = mobilevision.create_model("mobilenetv3_small_100", num_classes=10).eval()
    with pytest.raises(ValueError, match="no Mobile-Former blocks"):
        capture_mobile_former_attention(model, torch.zeros(1, 3, 32, 32))


def test_arrays_and_figure(tmp_path):
    model = _model()
    x = _photos(model, names=("chelsea",))
    blocks, _ = capture_mobile_former_attention(model, x)
    arrays = attention_arrays(blocks)
    assert set(arrays) == {f"m2f_{b.name.replace('.', '_')}" for b in blocks} | \
        {f"f2m_{b.name.replace('.', '_')}" for b in blocks if b.former_to_mobile is not None}
    np.testing.assert_allclose(arrays["m2f_blocks_1"].sum((-2, -1)), 1.0, atol=1e-5)
    path = tmp_path / "att.png"
    cfg = resolve_data_config(model, input_size=(64, 64))
    plot_attention(blocks, display_image(x[0], cfg), path, title="test")
    from PIL import Image

    with Image.open(path) as im:
        assert im.size[0] > 400 and im.size[1] > 300
