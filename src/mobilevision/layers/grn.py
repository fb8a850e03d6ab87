"""Global Response Normalization (ConvNeXt V2, Woo et al. 2023)."""
from __future__ import annotations

import torch
from torch import nn


class GRN(nn.Module):
    """GRN on channels-last maps: x + bias + weight * (x * N(x)), with N(x)_c = G_c / (mean_c G + eps).

    G_c is the L2 norm of channel c over (H, W). `weight` and `bias` (C,) start at zero, so the layer starts as
    the identity. The whole layer is computed in float32 and cast back to the input dtype: in float16 the sum of
    squares over a 56x56 map overflows (inf / NaN outputs), and bf16 loses the ratio's precision.

    Shapes: (B, H, W, C) -> (B, H, W, C).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] != self.weight.shape[0]:
            raise ValueError(
                f"GRN expects channels-last input (B, H, W, {self.weight.shape[0]}), got shape {tuple(x.shape)}"
            )
        low = x.dtype != torch.float32  # no casts at all in a float32 (e.g. exported) graph
        xf = x.float() if low else x
        g = torch.linalg.vector_norm(xf, ord=2, dim=(1, 2), keepdim=True)  # (B, 1, 1, C)
        n = g / (g.mean(dim=-1, keepdim=True) + self.eps)  # (B, 1, 1, C)
        w, b = (self.weight.float(), self.bias.float()) if low else (self.weight, self.bias)
        out = xf + torch.addcmul(b, w, xf * n)
        return out.to(x.dtype) if low else out

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
