"""The one activation factory, and the activations of the MetaFormer baselines (Yu et al. 2022)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .helpers import check_choice


class StarReLU(nn.Module):
    """s * relu(x)^2 + b with learnable scalars `scale` (init 1) and `bias` (init 0), each of shape (1,)."""

    def __init__(self, scale_value: float = 1.0, bias_value: float = 0.0, learnable: bool = True) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), float(scale_value)), requires_grad=learnable)
        self.bias = nn.Parameter(torch.full((1,), float(bias_value)), requires_grad=learnable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.relu(x).square() + self.bias


class SquaredReLU(nn.Module):
    """relu(x)^2 (So et al., Primer), used in the ConvFormer / CAFormer MLP head."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


def create_act(act: str | Callable[..., nn.Module] | None, inplace: bool = True) -> nn.Module:
    """An activation module from a name (below), a module class (called with no arguments) or None (identity).
    `inplace` applies to the ones that support it."""
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
        "sigmoid": nn.Sigmoid,
        "gelu": nn.GELU,
        "tanh": nn.Tanh,
        "star_relu": StarReLU,
        "squared_relu": SquaredReLU,
    }
    check_choice(act, sorted(table), "activation")
    return table[act]()
