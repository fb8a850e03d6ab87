"""Convolution + BatchNorm + activation, the unit most CNN blocks are made of."""
from __future__ import annotations

from typing import Callable

from torch import nn

from .activations import create_act


def get_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Symmetric 'same'-style padding of PyTorch-trained models."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


class ConvNormAct(nn.Sequential):
    """conv -> BatchNorm -> activation; submodules named `conv`, `bn`, `act` unless `names` says otherwise
    (timm's MobileNet-family conv block is `conv`, `bn1`, `act1`); `conv_layer` is an `nn.Conv2d` subclass
    taking its arguments (ASPP's `AtrousConv2d`).

    Shapes: (B, in_chs, H, W) -> (B, out_chs, H / stride, W / stride).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        act: str | Callable[..., nn.Module] | None = "relu",
        bias: bool = False,
        norm: bool = True,
        bn_eps: float = 1e-5,
        names: tuple[str, str, str] = ("conv", "bn", "act"),
        conv_layer: type[nn.Conv2d] = nn.Conv2d,
    ) -> None:
        super().__init__()
        conv = conv_layer(in_chs, out_chs, kernel_size, stride, get_padding(kernel_size, stride, dilation),
                          dilation=dilation, groups=groups, bias=bias)
        self.add_module(names[0], conv)
        self.add_module(names[1], nn.BatchNorm2d(out_chs, eps=bn_eps) if norm else nn.Identity())
        self.add_module(names[2], create_act(act))

    @property
    def out_channels(self) -> int:
        return self[0].out_channels
