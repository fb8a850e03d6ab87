"""A dilated 3x3 convolution that leaves out the work its zero padding makes useless."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .helpers import capturing_graph

# Below this share of the dense MACs the tap-by-tap form beats oneDNN's dense dilated convolution on NCHW input
# (960 -> 256 channels, 1-2 threads: 0.40 ran in 0.5-0.95 of the dense time, 0.57 was 1.1-1.4x slower), whose
# 1x1 convolutions reorder their NCHW input each call, so the tap form pays that nine times.
TAP_FORM_MAX_SHARE = 0.4


def _tap_spans(n: int, rate: int) -> list[tuple[int, slice, slice]]:
    """Along one axis of size n: (kernel index, output slice, input slice) of each tap that reads real input.
    The outer taps at -rate / +rate only read the input for the n - rate outputs they do not push off the edge."""
    spans = [(1, slice(0, n), slice(0, n))]
    if rate < n:
        spans += [(0, slice(rate, n), slice(0, n - rate)), (2, slice(0, n - rate), slice(rate, n))]
    return spans


def tap_share(h: int, w: int, rate: int) -> float:
    """Share of a dense 3x3 convolution's MACs (dilation `rate`, padding `rate`, on an h x w map) whose input is
    not padding."""
    def axis(n: int) -> int:
        return n + 2 * max(n - rate, 0)

    return axis(h) * axis(w) / (9 * h * w)


class AtrousConv2d(nn.Conv2d):
    """`nn.Conv2d(in_chs, out_chs, 3, padding=rate, dilation=rate)` (ASPP's branches) that, when the rate is
    large against the map, runs as one 1x1 convolution per tap over the outputs where that tap reads the input.

    At DeepLabv3's rates 12 / 24 / 36 on the 33x33 map of a 520 px input at output stride 16 most of the dense
    convolution multiplies zero padding; at rate >= map size the filter is its centre weight alone (the
    DeepLabv3 paper's remark on large rates). The result is the dense one up to float summation order, and the
    parameters are those of the `nn.Conv2d`. The dense convolution runs when the tap form would do more than
    `TAP_FORM_MAX_SHARE` of its work; off the CPU or on channels_last input (oneDNN's channels_last kernel
    already runs it at a cost close to the tap form's); while a graph is traced, compiled or exported (its shape
    must not depend on the input size); and on the meta device (so counted MACs are the dense ones papers report).
    Shapes: (B, in_chs, H, W) -> (B, out_chs, H, W).
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True) -> None:
        if kernel_size != 3 or stride != 1 or groups != 1 or padding != dilation:
            raise ValueError("AtrousConv2d is a 3x3, stride-1, ungrouped convolution with padding = dilation; got "
                             f"kernel {kernel_size}, stride {stride}, groups {groups}, padding {padding}, "
                             f"dilation {dilation}")
        super().__init__(in_chs, out_chs, 3, 1, dilation, dilation=dilation, bias=bias)

    def _dense(self, x: torch.Tensor) -> bool:
        if capturing_graph(x) or x.device.type != "cpu" or not x.is_contiguous():
            return True
        return tap_share(x.shape[-2], x.shape[-1], self.dilation[0]) > TAP_FORM_MAX_SHARE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dense(x):
            return super().forward(x)
        rate, w = self.dilation[0], self.weight
        y = F.conv2d(x, w[:, :, 1:2, 1:2], self.bias)
        for ky, out_y, in_y in _tap_spans(x.shape[-2], rate):
            for kx, out_x, in_x in _tap_spans(x.shape[-1], rate):
                if ky != 1 or kx != 1:
                    y[:, :, out_y, out_x] += F.conv2d(x[:, :, in_y, in_x], w[:, :, ky:ky + 1, kx:kx + 1])
        return y
