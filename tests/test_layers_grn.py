"""GRN: the ConvNeXt V2 formula, zero-init identity, and finiteness in float16 / bf16."""
from __future__ import annotations

import pytest
import torch

from mobilevision.layers.grn import GRN


def _reference(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The official formula, with (1, 1, 1, C) gamma/beta, computed in float64."""
    x = x.double()
    gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
    nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
    return gamma.double() * (x * nx) + beta.double() + x


def test_zero_init_is_identity_and_formula():
    grn = GRN(16)
    x = torch.randn(2, 5, 7, 16)
    assert torch.equal(grn(x), x)
    with torch.no_grad():
        grn.weight.normal_()
        grn.bias.normal_()
    ref = _reference(x, grn.weight.view(1, 1, 1, -1), grn.bias.view(1, 1, 1, -1))
    assert torch.allclose(grn(x).double(), ref, atol=1e-5)


def test_float16_large_map_stays_finite():
    # 56x56 positions of magnitude ~8: the sum of squares (~2e5) overflows float16's 65504 if reduced in fp16.
    torch.manual_seed(0)
    grn = GRN(32)
    with torch.no_grad():
        grn.weight.uniform_(0.5, 1.5)
        grn.bias.normal_(0, 0.1)
    x = (torch.randn(2, 56, 56, 32) * 8).half()
    # The decomposed form an exporter emits (square, ReduceSum, sqrt) overflows when kept in float16.
    naive = x.square().sum(dim=(1, 2)).sqrt()
    assert not torch.isfinite(naive).all(), "test input should overflow a float16 reduction"
    out = grn.half()(x)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    ref = _reference(x.float(), grn.weight.float().view(1, 1, 1, -1), grn.bias.float().view(1, 1, 1, -1))
    rel = ((out.double() - ref).abs().max() / ref.abs().max()).item()
    assert rel < 2e-3, rel


def test_bf16_autocast_output_finite_and_close():
    grn = GRN(24)
    with torch.no_grad():
        grn.weight.normal_()
        grn.bias.normal_()
    x = torch.randn(1, 28, 28, 24) * 30
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = grn(x.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    ref = _reference(x.bfloat16().float(), grn.weight.view(1, 1, 1, -1), grn.bias.view(1, 1, 1, -1))
    assert ((out.double() - ref).abs().max() / ref.abs().max()).item() < 1e-2


def test_bad_layout_is_refused():
    with pytest.raises(ValueError, match="channels-last"):
        GRN(8)(torch.randn(1, 8, 4, 4))
