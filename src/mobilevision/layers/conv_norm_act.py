"""Convolution + BatchNorm + activation, the unit most CNN blocks are made of."""
from __future__ import annotations

from typing import Callable

from torch import nn


def get_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Symmetric 'same'-style padding of PyTorch-trained models."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


def create_act(act: str | Callable[..., nn.Module] | None, inplace: bool = True) -> nn.Module:
    """An activation module from a name ('relu', 'relu6', 'hard_swish', 'silu', 'gelu', ...) or a class."""
    if act is None or act == "identity":
        return nn.Identity()
    if not isinstance(act, str):
        return act()
    table: dict[str, Callable[[], nn.Module]] = {
        "relu": lambda: nn.ReLU(inplace=inplace),
        "relu6": lambda: nn.ReLU6(inplace=inplace),
        "hard_swish": lambda: nn.Hardswish(inplace=inplace),
        "hard_sigmoid": lambda: nn.Hardsigmoid(inplace=inplace),
        "silu": lambda: nn.SiLU(inplace=inplace),
        "swish": lambda: nn.SiLU(inplace=inplace),
        "sigmoid": lambda: nn.Sigmoid(),
        "gelu": lambda: nn.GELU(),
        "tanh": lambda: nn.Tanh(),
    }
    if act not in table:
        raise ValueError(f"unknown activation {act!r}; accepted: {', '.join(sorted(table))}")
    return table[act]()


class ConvNormAct(nn.Sequential):
    """conv -> BatchNorm -> activation; submodules named `conv`, `bn`, `act`.

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
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride, get_padding(kernel_size, stride, dilation),
            dilation=dilation, groups=groups, bias=bias,
        )
        self.bn = nn.BatchNorm2d(out_chs, eps=bn_eps) if norm else nn.Identity()
        self.act = create_act(act)

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels


