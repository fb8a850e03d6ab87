"""Stochastic depth."""
from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability `drop_prob`, rescaling the rest."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = x.new_empty(mask_shape).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Per-sample drop of a residual branch (Huang et al. 2016); identity in eval mode."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


def drop_path_rates(drop_path_rate: float, depths: list[int] | tuple[int, ...]) -> list[list[float]]:
    """Linearly increasing per-block rates from 0 to `drop_path_rate`, split by stage (ConvNeXt, MetaFormer)."""
    total = sum(depths)
    rates = torch.linspace(0, drop_path_rate, total, device="cpu").tolist() if total > 0 else []
    out, start = [], 0
    for depth in depths:
        out.append(rates[start:start + depth])
        start += depth
    return out
