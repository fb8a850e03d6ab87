"""AtrousConv2d: the tap-by-tap form gives the dense dilated convolution's result, values and gradients, and
steps aside where a graph is traced or MACs are counted."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from mobilevision.layers import AtrousConv2d
from mobilevision.layers.atrous_conv import TAP_FORM_MAX_SHARE, tap_share


def _conv(rate: int, bias: bool = True) -> AtrousConv2d:
    torch.manual_seed(rate)
    return AtrousConv2d(16, 8, 3, padding=rate, dilation=rate, bias=bias)


def _dense(conv: AtrousConv2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, conv.weight, conv.bias, padding=conv.padding, dilation=conv.dilation)


@pytest.mark.parametrize("rate,h,w", [(36, 33, 33), (24, 33, 33), (12, 33, 33), (18, 9, 40), (6, 7, 5),
                                      (2, 33, 33)])
def test_matches_the_dense_convolution(rate, h, w):
    conv = _conv(rate)
    x = torch.randn(2, 16, h, w)
    assert conv(x).shape == (2, 8, h, w)
    torch.testing.assert_close(conv(x), _dense(conv, x), atol=1e-5, rtol=1e-5)
    xc = x.contiguous(memory_format=torch.channels_last)  # the dense form runs on channels_last input
    torch.testing.assert_close(conv(xc), _dense(conv, x), atol=1e-5, rtol=1e-5)


def test_gradients_match_the_dense_convolution():
    conv = _conv(24, bias=False)
    x = torch.randn(1, 16, 33, 33, requires_grad=True)
    g = torch.randn(1, 8, 33, 33)
    (conv(x) * g).sum().backward()
    gx, gw = x.grad.clone(), conv.weight.grad.clone()
    x.grad = None
    conv.weight.grad = None
    (_dense(conv, x) * g).sum().backward()
    torch.testing.assert_close(gx, x.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, conv.weight.grad, atol=1e-4, rtol=1e-5)


def test_share_decides_the_form():
    assert tap_share(33, 33, 36) == pytest.approx(1 / 9)
    assert tap_share(33, 33, 1) == pytest.approx((33 + 64) ** 2 / (9 * 33 * 33))
    assert tap_share(33, 33, 24) < TAP_FORM_MAX_SHARE < tap_share(33, 33, 12)


def test_counted_macs_are_the_dense_ones_and_tracing_keeps_the_graph_size_free():
    conv = _conv(36)
    x = torch.randn(1, 16, 33, 33)
    with FlopCounterMode(display=False) as fc:  # on real tensors the tap form does 1/9 of the work
        conv(x)
    assert fc.get_total_flops() == 2 * 16 * 8 * 33 * 33
    with torch.device("meta"):
        meta = AtrousConv2d(16, 8, 3, padding=36, dilation=36)
    with FlopCounterMode(display=False) as fc:
        meta(torch.zeros(1, 16, 33, 33, device="meta"))
    assert fc.get_total_flops() == 2 * 16 * 8 * 9 * 33 * 33
    side = torch.export.Dim("side", min=8, max=256)  # exported at 33x33: dense, and right at any other size
    program = torch.export.export(conv, (x,), dynamic_shapes=({2: side, 3: side},))
    y = torch.randn(1, 16, 80, 80)
    torch.testing.assert_close(program.module()(y), _dense(conv, y), atol=1e-5, rtol=1e-5)


def test_refuses_what_it_is_not():
    with pytest.raises(ValueError, match="padding = dilation"):
        AtrousConv2d(4, 4, 3, padding=1, dilation=2)
