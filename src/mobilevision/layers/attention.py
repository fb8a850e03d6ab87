"""The one multi-head self-attention (on token sequences) and the pre-norm transformer encoder layer.

Attention runs through `F.scaled_dot_product_attention` (fused kernels where available, one exportable
op). Submodule names (`qkv`, `proj`, `norm1`, `attn`, `norm2`, `mlp.fc1`, `mlp.fc2`) follow timm's ViT
block so its transformer weights load unchanged. MetaFormer's attention token mixer is a thin map adapter
of this class (`token_mixers.AttentionMixer`).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .drop_path import DropPath
from .mlp import Mlp


class Attention(nn.Module):
    """Self-attention with one fused qkv projection and an output projection.

    `num_heads` heads of `head_dim` channels (default dim // num_heads); the inner width num_heads * head_dim
    may differ from `dim` (CAFormer). The scale is head_dim ** -0.5. Shapes: (B, N, dim) -> (B, N, dim).
    """

    def __init__(self, dim: int, num_heads: int = 8, head_dim: int | None = None, qkv_bias: bool = True,
                 proj_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if num_heads < 1 or (head_dim is None and dim % num_heads != 0):
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads} (num_heads >= 1)")
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner = self.num_heads * self.head_dim
        self.attn_drop = float(attn_drop)
        self.qkv = nn.Linear(dim, inner * 3, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)  # (B, N, inner)
        return self.proj_drop(self.proj(x))


class TransformerEncoderLayer(nn.Module):
    """Pre-norm encoder layer: x + DropPath(MHSA(LN(x))), then x + DropPath(MLP(LN(x))).

    Shapes: (B, N, dim) -> (B, N, dim). `mlp_ratio` sets the MLP hidden width (MobileViT: 2).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        act: str | Callable[..., nn.Module] = "gelu",
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=act, drop=drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))
