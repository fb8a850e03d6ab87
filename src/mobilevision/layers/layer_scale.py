"""Per-channel learnable scaling: LayerScale (Touvron et al. 2021) and res-scale (Shleifer et al. 2021)."""
from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """x * scale with `scale` (C,) initialised to `init_value`.

    Used on a residual branch (layer-scale, init small, e.g. 1e-5) or on the shortcut itself (res-scale,
    init 1.0). `channels_last` picks the channel axis: (B, H, W, C) / (B, N, C) vs (B, C, H, W).
    """

    def __init__(self, dim: int, init_value: float = 1e-5, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.scale = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return x * self.scale
        return x * self.scale.view(-1, 1, 1)  # (B, C, H, W)

    def extra_repr(self) -> str:
        return f"{self.scale.shape[0]}, channels_last={self.channels_last}"
