"""Stochastic depth: the DropPath layer and the one per-block rate schedule."""
from __future__ import annotations

from itertools import islice
from typing import Sequence

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


def drop_path_rates(rate: float, depths: Sequence[int], endpoint: bool = True) -> list[list[float]]:
    """Per-block rates growing linearly over all sum(depths) blocks, split by stage.

    endpoint=True: rate * i / (N - 1), 0 .. rate (ConvNeXt, MetaFormer: torch.linspace(0, rate, N));
    endpoint=False: rate * i / N (TF EfficientNet and timm's EfficientNetBuilder). Plain Python floats, so
    it also runs under torch.device('meta').
    """
    total = sum(depths)
    div = total - 1 if endpoint else total
    flat = iter([rate * i / div if div > 0 else 0.0 for i in range(total)])
    return [list(islice(flat, d)) for d in depths]
