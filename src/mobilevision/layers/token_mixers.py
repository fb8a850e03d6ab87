"""MetaFormer token mixers (Yu et al. 2022): the part of a block that mixes information across positions.

Every mixer takes `dim` first. Mixers with `channels_last = True` take (B, H, W, C) maps, the others (B, C, H, W)
(the MetaFormer block reads the attribute, default False, and lays out its tensors for its mixer).
"""
from __future__ import annotations

import torch
from torch import nn

from .activations import StarReLU
from .attention import Attention
from .helpers import check_choice


class IdentityMixer(nn.Identity):
    """No token mixing (IdentityFormer); takes (and ignores) `dim`."""


class Pooling(nn.Module):
    """PoolFormer's mixer: avgpool(x) - x, stride 1, padding not counted in the average.

    The `- x` removes the identity that the block's shortcut already adds. (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, dim: int, pool_size: int = 3) -> None:
        super().__init__()
        if pool_size < 1 or pool_size % 2 == 0:
            raise ValueError(f"pool_size must be an odd positive int, got {pool_size}")
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class SepConv(nn.Module):
    """ConvFormer's mixer: 1x1 (C -> 2C) -> StarReLU -> depthwise kxk -> 1x1 (2C -> C), no biases.

    The official code writes the 1x1s as Linear layers on channels-last tensors; 1x1 convs are the same maths
    and match timm's parameter shapes. `dilation` dilates the depthwise conv (output stride below 32).
    (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, dim: int, expansion_ratio: float = 2.0, kernel_size: int = 7, bias: bool = False,
                 dilation: int = 1) -> None:
        super().__init__()
        mid = int(expansion_ratio * dim)
        self.pwconv1 = nn.Conv2d(dim, mid, 1, bias=bias)
        self.act1 = StarReLU()
        self.dwconv = nn.Conv2d(mid, mid, kernel_size, padding=kernel_size // 2 * dilation, dilation=dilation,
                                groups=mid, bias=bias)
        self.pwconv2 = nn.Conv2d(mid, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.pwconv1(x))  # (B, 2C, H, W)
        return self.pwconv2(self.dwconv(x))


class AttentionMixer(Attention):
    """CAFormer's mixer: the one `Attention` over all H*W positions of a channels-last map.

    `num_heads = dim // head_dim` (at least 1); qkv and proj without bias as in CAFormer.
    Shapes: (B, H, W, C) -> (B, H, W, C).
    """

    channels_last = True

    def __init__(self, dim: int, head_dim: int = 32, qkv_bias: bool = False, proj_bias: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__(dim, max(1, dim // head_dim), head_dim, qkv_bias, proj_bias, attn_drop, proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        return super().forward(x.reshape(b, h * w, c)).reshape(b, h, w, c)


class RandomMixing(nn.Module):
    """RandFormer's mixer: a fixed (not trained) row-softmaxed random matrix mixes the N = H*W positions.

    The matrix is a buffer-like frozen parameter `random_matrix` (N, N), so the input size is fixed.
    Shapes: (B, C, H, W) with H*W == num_tokens -> (B, C, H, W).
    """

    def __init__(self, dim: int, num_tokens: int = 196) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.random_matrix = nn.Parameter(torch.softmax(torch.rand(num_tokens, num_tokens), dim=-1),
                                          requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h * w != self.num_tokens:
            raise ValueError(f"RandomMixing was built for {self.num_tokens} positions, got a {h}x{w} map")
        out = torch.einsum("mn,bcn->bcm", self.random_matrix.to(x.dtype), x.reshape(b, c, h * w))
        return out.reshape(b, c, h, w)


TOKEN_MIXERS: dict[str, type[nn.Module]] = {
    "identity": IdentityMixer,
    "pool": Pooling,
    "sepconv": SepConv,
    "attention": AttentionMixer,
    "random": RandomMixing,
}


def create_token_mixer(name: str, dim: int, **kwargs) -> nn.Module:
    """A token mixer by name: 'identity' | 'pool' | 'sepconv' | 'attention' | 'random'."""
    check_choice(name, TOKEN_MIXERS, "token mixer")
    return TOKEN_MIXERS[name](dim, **kwargs)
