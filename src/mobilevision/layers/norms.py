"""Normalisation layers for channels-first maps."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dim of a (B, C, H, W) map (ConvNeXt downsampling, heads).

    Computed with F.layer_norm on a channels-last view, which exports to ONNX LayerNormalization.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


class GroupNorm1(nn.GroupNorm):
    """GroupNorm with a single group: normalise over (C, H, W) jointly, per-channel affine.

    PoolFormer's norm (with bias, eps 1e-5) and PoolFormerV2's "modified LayerNorm" (`bias=False`, eps 1e-6).
    `channels_last=True` takes (B, H, W, C) input (MetaFormer attention stages); the default takes (B, C, H, W).
    Parameters `weight` (C,) and `bias` (C,) or no bias.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, bias: bool = True, channels_last: bool = False) -> None:
        super().__init__(1, num_channels, eps=eps, affine=True)
        if not bias:
            self.register_parameter("bias", None)
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:  # via (B, C, H, W)
            return F.group_norm(x.permute(0, 3, 1, 2), 1, self.weight, self.bias, self.eps).permute(0, 2, 3, 1)
        return F.group_norm(x, 1, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_channels}, eps={self.eps}, bias={self.bias is not None}, "
                f"channels_last={self.channels_last}")


def channel_layer_norm(num_channels: int, eps: float = 1e-6, bias: bool = True,
                       channels_last: bool = False) -> nn.Module:
    """LayerNorm over channels only, for (B, C, H, W) (`LayerNorm2d`) or (B, H, W, C) (`nn.LayerNorm`) input.

    `bias=False` gives the bias-free LayerNorm of ConvFormer / CAFormer (parameter `weight` only).
    """
    if channels_last:
        return nn.LayerNorm(num_channels, eps=eps, bias=bias)
    return LayerNorm2d(num_channels, eps=eps, bias=bias)
