"""Activations of the MetaFormer baselines (Yu et al. 2022)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


def create_metaformer_act(name: str) -> nn.Module:
    """'gelu' | 'star_relu' | 'squared_relu' | 'relu' -> module."""
    table = {"gelu": nn.GELU, "star_relu": StarReLU, "squared_relu": SquaredReLU, "relu": nn.ReLU}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; accepted: {', '.join(sorted(table))}")
    return table[name]()
