"""Dynamic ReLU (Chen et al., ECCV 2020, arXiv 2003.10027) and the token-conditioned form of Mobile-Former.

DY-ReLU: y_c = max_k (a_c^k(x) * x_c + b_c^k(x)), with coefficients from a hyper-function of the whole
input: global average pool -> FC -> ReLU -> FC, residuals normalised to [-1, 1] by 2*sigmoid - 1, and
a^k = alpha^k + lambda_a * da^k, b^k = beta^k + lambda_b * db^k, alpha = (1, 0, ...), beta = 0.

Variants (`variant=`):
- "A": coefficients shared over space and channels (2K scalars per sample);
- "B": shared over space, per channel (2KC);
- "C": per channel, times a spatial attention pi_hw = min(gamma * softmax_hw(z / tau), 1) with
  gamma = HW / 3 and z a 1x1 conv (+BN) of the input. Because pi >= 0, scaling every coefficient by pi
  equals scaling the output, which is how it is computed here.

The last hyper FC starts at zero, so A and B are exactly ReLU at initialisation; C is ReLU times pi (pi is
1/3 everywhere while the spatial logits are uniform, as in the DY-ReLU authors' code).

Mobile-Former's form (`TokenDynamicReLU`): the hyper-function reads a global token instead of pooled
features (token 0: Linear(d -> d/4) -> ReLU -> Linear(d/4 -> 2C) -> hard-sigmoid), K = 2 slopes per
channel and no intercepts: a1 = 2 (h1 - 0.5) + 1, a2 = 2 (h2 - 0.5), y = max(a1 x, a2 x).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .helpers import check_choice

_VARIANTS = ("A", "B", "C")


class DynamicReLU(nn.Module):
    """DY-ReLU-A/B/C on a (B, C, H, W) map; output has the input's shape.

    Args: `channels` C; `variant` "A" | "B" | "C"; `k` number of linear pieces (2); `reduction` squeeze
    ratio of the hyper-function (4); `lambda_a`, `lambda_b` residual ranges of slopes and intercepts
    (1.0, 0.5); `temperature` tau of the C-variant spatial softmax.
    """

    def __init__(self, channels: int, variant: str = "B", k: int = 2, reduction: int = 4, lambda_a: float = 1.0,
                 lambda_b: float = 0.5, temperature: float = 10.0) -> None:
        super().__init__()
        check_choice(variant, _VARIANTS, "DY-ReLU variant")
        if k < 1:
            raise ValueError(f"k (number of linear pieces) must be >= 1, got {k}")
        self.channels, self.variant, self.k = channels, variant, k
        self.lambda_a, self.lambda_b, self.temperature = lambda_a, lambda_b, temperature
        squeeze = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, squeeze)
        self.fc2 = nn.Linear(squeeze, 2 * k * (1 if variant == "A" else channels))
        nn.init.zeros_(self.fc2.weight)  # residuals start at 0: the function starts as ReLU
        nn.init.zeros_(self.fc2.bias)
        init_a = torch.zeros(k)
        init_a[0] = 1.0
        self.register_buffer("init_a", init_a, persistent=False)
        if variant == "C":
            self.spatial = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.BatchNorm2d(1))

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Slopes a and intercepts b, each (B, K, C or 1), for the input x."""
        theta = self.fc2(F.relu(self.fc1(x.mean((2, 3)))))  # (B, 2 * K * C')
        theta = 2.0 * torch.sigmoid(theta) - 1.0  # residuals in [-1, 1]
        theta = theta.reshape(x.shape[0], 2, self.k, -1)  # (B, 2, K, C')
        a = self.init_a.to(theta.dtype)[None, :, None] + self.lambda_a * theta[:, 0]
        return a, self.lambda_b * theta[:, 1]

    def spatial_attention(self, x: torch.Tensor) -> torch.Tensor:
        """pi (B, 1, H, W) = min(HW/3 * softmax_hw(z / tau), 1) (variant C only)."""
        b, _, h, w = x.shape
        z = self.spatial(x).reshape(b, h * w) / self.temperature
        pi = torch.softmax(z, dim=1) * (h * w / 3.0)
        return pi.clamp(max=1.0).reshape(b, 1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.coefficients(x)
        out = x * a[:, 0, :, None, None] + b[:, 0, :, None, None]  # (B, C, H, W)
        for i in range(1, self.k):
            out = torch.maximum(out, x * a[:, i, :, None, None] + b[:, i, :, None, None])
        if self.variant == "C":
            out = out * self.spatial_attention(x)
        return out


class TokenDynamicReLU(nn.Module):
    """Mobile-Former's DY-ReLU: two slopes per channel from a global token, no intercepts.

    forward(x (B, C, H, W), tokens (B, T, d), mix=None) -> (B, C, H, W).
    `token_id` >= 0 reads that token (Mobile-Former's classifiers: 0); `token_id == -1` is the spatial-aware
    form: every token gives coefficients and `mix` (B, T, H, W), softmax-normalised over T (the bridge's
    attention), weights them per pixel. `fc2` starts at zero so the layer starts as ReLU.
    """

    def __init__(self, channels: int, token_dim: int, reduction: int = 4, token_id: int = 0) -> None:
        super().__init__()
        if token_id < -1:
            raise ValueError(f"token_id must be a token index >= 0 or -1 (spatial-aware), got {token_id}")
        self.channels, self.token_id = channels, token_id
        self.fc1 = nn.Linear(token_dim, token_dim // reduction)
        self.fc2 = nn.Linear(token_dim // reduction, 2 * channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def hyper(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hard-sigmoid outputs h in [0, 1], (..., 2C) for tokens (..., d): h1 = h[..., :C], h2 = h[..., C:]."""
        return F.hardsigmoid(self.fc2(F.relu(self.fc1(tokens))))

    def slopes(self, tokens: torch.Tensor, mix: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Slopes a1 in [0, 2] and a2 in [-1, 1], each (B, C, 1, 1), or (B, C, H, W) in the spatial form."""
        if self.token_id >= 0:
            h = self.hyper(tokens[:, self.token_id])[:, :, None, None]  # (B, 2C, 1, 1)
        else:
            if mix is None:
                raise ValueError("the spatial-aware DY-ReLU (token_id=-1) needs `mix`, the (B, T, H, W) attention")
            b, t, hh, ww = mix.shape
            hp = self.hyper(tokens).transpose(1, 2)  # (B, 2C, T)
            h = (hp @ mix.reshape(b, t, hh * ww)).reshape(b, 2 * self.channels, hh, ww)  # (B, 2C, H, W)
        # slices, not split: ExecuTorch's edge lowering of split fixes the batch at the traced size
        h1, h2 = h[:, :self.channels], h[:, self.channels:]
        return (h1 - 0.5) * 2.0 + 1.0, (h2 - 0.5) * 2.0

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        a1, a2 = self.slopes(tokens, mix)
        if self.token_id == -1 and a1.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"mix size {tuple(a1.shape[-2:])} does not match the map {tuple(x.shape[-2:])}")
        return torch.maximum(x * a1, x * a2)


class SpatialDynamicReLU(TokenDynamicReLU):
    """Spatial-aware DY-ReLU (Mobile-Former's detector): at every position the two slopes are a convex mix of
    the per-token slopes, with weights that sum to 1 over the T tokens there.

    forward(x (B, C, H, W), tokens (B, T, d), mix_logits (B, T, H', W')) -> (B, C, H, W). `mix_logits` are
    per-position token scores (the Mobile->Former attention logits, averaged over heads); they are average-pooled
    to x's size when the block strides and softmax-normalised over T (`mixing_weights`). The hyper-function and
    the slopes are `TokenDynamicReLU`'s (token_id=-1), so it starts as ReLU too.
    """

    def __init__(self, channels: int, token_dim: int, reduction: int = 4) -> None:
        super().__init__(channels, token_dim, reduction, token_id=-1)

    @staticmethod
    def mixing_weights(mix_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, T, H', W') logits -> (B, T, H, W) weights, >= 0 and summing to 1 over T at every position."""
        if mix_logits.dim() != 4:
            raise ValueError(f"mix_logits must be (B, T, H, W), got shape {tuple(mix_logits.shape)}")
        if tuple(mix_logits.shape[-2:]) != tuple(size):
            mix_logits = F.adaptive_avg_pool2d(mix_logits, size)
        return torch.softmax(mix_logits, dim=1)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mix_logits: torch.Tensor | None = None) -> torch.Tensor:
        if mix_logits is None:
            raise ValueError("SpatialDynamicReLU needs mix_logits, the (B, T, H, W) token scores of each position")
        if mix_logits.shape[:2] != tokens.shape[:2]:
            raise ValueError(f"mix_logits {tuple(mix_logits.shape)} and tokens {tuple(tokens.shape)} disagree on "
                             "(batch, tokens)")
        return super().forward(x, tokens, self.mixing_weights(mix_logits, x.shape[-2:]))
