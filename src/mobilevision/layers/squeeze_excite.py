"""Squeeze-and-excitation channel gate (Hu et al.), in the forms the MobileNet-family papers use."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .activations import create_act


class SqueezeExcite(nn.Module):
    """Global average pool -> 1x1 reduce -> act -> 1x1 expand -> gate, multiplied onto the input.

    The reduced width is the caller's rule (MobileNetV3: make_divisible(C/4); EfficientNet: in_chs/4 of the
    block input; MoGA: C//4). Submodules `conv_reduce`, `conv_expand` as in timm.
    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(
        self,
        channels: int,
        reduced_chs: int,
        act: str | Callable[..., nn.Module] = "relu",
        gate: str | Callable[..., nn.Module] = "sigmoid",
    ) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced_chs, 1, bias=True)
        self.act1 = create_act(act)
        self.conv_expand = nn.Conv2d(reduced_chs, channels, 1, bias=True)
        self.gate = create_act(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        s = self.conv_expand(self.act1(self.conv_reduce(s)))
        return x * self.gate(s)
