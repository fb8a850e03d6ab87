"""Mobile-Former (Chen et al., CVPR 2022, arXiv 2108.05895), built as the released AAboys/MobileFormer code.

A MobileNet branch on the feature map and a tiny transformer on T learnable global tokens (T x d), linked
by two light cross-attention bridges. One block, on map X (B, C, H, W) and tokens Z (B, T, d):
1. Mobile->Former: queries from Z, keys = values = X itself, 2 heads, a token-conditioned channel gate
   2*hsigmoid(Linear(Z)), output projection, residual, post-LayerNorm;
2. Former: self-attention over the tokens with a query projection only, 4 heads, post-LN, FFN 2x GELU, post-LN;
3. Mobile on X: inverted bottleneck whose activations are DY-ReLUs driven by token 0; stride-2 blocks use
   dw(s2, multiplier e1) -> pw -> dw(multiplier 4) -> pw with an inner residual;
4. Mobile<-Former: queries = the map itself, keys/values projected from Z, 2 heads, added after the residual.
Head: 1x1 conv to 6C (ReLU6) -> pool -> h-swish, concat token 0, FC + BatchNorm1d + h-swish, classifier.

Tokens are kept batch-first (B, T, d) here; the released code stores (T, B, d). `checkpoint_filter` loads
the released key layout (`tokens.weight`, `stem.N`, `features.N...`, `local_global`, `classifier...`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mobilevision.models.features import Classifier, check_output_stride
from mobilevision.layers.conv_norm_act import ConvNormAct
from mobilevision.layers.drop_path import DropPath
from mobilevision.layers.dynamic_relu import SpatialDynamicReLU, TokenDynamicReLU
from mobilevision.layers.mlp import Mlp
from mobilevision.layers.weight_init import init_weights
from mobilevision.models.checkpoint import rename_prefix
from mobilevision.models.registry import WeightSource, register_variants


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle with `groups` groups; rank-4 reshapes only. (B, C, H, W) -> same."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b, self.groups, c // self.groups, h * w).transpose(1, 2)
        return x.reshape(b, c, h, w)


def _shuffle(groups: int, enabled: bool) -> nn.Module:
    return ChannelShuffle(groups) if enabled else nn.Identity()


class MobileToFormer(nn.Module):
    """Mobile->Former (released `Local2Global`, 'attn' type): keys = values = the map's channels split into heads.

    forward(x (B, C, H, W), tokens (B, T, d)) -> (tokens (B, T, d), logits (B, heads, T, HW)).
    """

    def __init__(self, chs: int, token_dim: int, num_heads: int = 2, gate: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        if chs % num_heads:
            raise ValueError(f"channels {chs} must be divisible by num_heads {num_heads}")
        self.num_heads, self.scale = num_heads, (chs // num_heads) ** -0.5
        self.q = nn.Linear(token_dim, chs)
        self.gate = nn.Linear(token_dim, chs) if gate else None
        self.proj = nn.Linear(chs, token_dim)
        self.norm = nn.LayerNorm(token_dim)
        self.drop_path = DropPath(drop_path)

    def attention_logits(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, heads, T, HW), keys = values (B, heads, C/heads, HW))."""
        b, c, h, w = x.shape
        t = tokens.shape[1]
        q = self.q(tokens).reshape(b, t, self.num_heads, -1).transpose(1, 2)  # (B, heads, T, c)
        kv = x.reshape(b, self.num_heads, c // self.num_heads, h * w)  # (B, heads, c, HW)
        return (q @ kv) * self.scale, kv

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c = x.shape[:2]
        logits, kv = self.attention_logits(x, tokens)
        out = logits.softmax(dim=-1) @ kv.transpose(-1, -2)  # (B, heads, T, c)
        out = out.transpose(1, 2).reshape(b, tokens.shape[1], c)  # (B, T, C)
        if self.gate is not None:
            out = out * (2.0 * F.hardsigmoid(self.gate(tokens)))
        tokens = self.norm(tokens + self.drop_path(self.proj(out)))
        return tokens, logits


class Former(nn.Module):
    """Token self-attention (query projection only, keys = values = tokens) + FFN, both post-LN. (B, T, d) -> same."""

    def __init__(self, token_dim: int, num_heads: int = 4, ffn_ratio: int = 2, drop_path: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(token_dim, token_dim)
        self.proj = nn.Linear(token_dim, token_dim)
        self.norm1 = nn.LayerNorm(token_dim)
        self.ffn = Mlp(token_dim, token_dim * ffn_ratio, act="gelu")
        self.norm2 = nn.LayerNorm(token_dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, d = tokens.shape
        q = self.q(tokens).reshape(b, t, self.num_heads, -1).transpose(1, 2)  # (B, heads, T, d/heads)
        kv = tokens.reshape(b, t, self.num_heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, kv, kv).transpose(1, 2).reshape(b, t, d)
        tokens = self.norm1(tokens + self.drop_path(self.proj(out)))
        return self.norm2(tokens + self.ffn(tokens))


class FormerToMobile(nn.Module):
    """Mobile<-Former (released `Global2Local`): softmax over the T tokens at each pixel, added to the map.

    (B, C, H, W), (B, T, d) -> (B, C, H, W).
    """

    def __init__(self, chs: int, token_dim: int, num_heads: int = 2, drop_path: float = 0.0) -> None:
        super().__init__()
        if chs % num_heads:
            raise ValueError(f"channels {chs} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.k = nn.Linear(token_dim, chs)
        self.v = nn.Linear(token_dim, chs)
        self.drop_path = DropPath(drop_path)

    def _qkv(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        t = tokens.shape[1]
        q = x.reshape(b, self.num_heads, c // self.num_heads, h * w).transpose(-1, -2)  # (B, heads, HW, c)
        k = self.k(tokens).reshape(b, t, self.num_heads, -1).transpose(1, 2)  # (B, heads, T, c)
        v = self.v(tokens).reshape(b, t, self.num_heads, -1).transpose(1, 2)
        return q, k, v

    def attention(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, heads, HW, T); each pixel's row sums to one."""
        q, k, _ = self._qkv(x, tokens)
        return ((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5).softmax(dim=-1)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x, tokens)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, c)
        return x + self.drop_path(out.transpose(-1, -2).reshape(x.shape))


class MobileBottleneck(nn.Module):
    """Stride-1 Mobile part (released `DnaBlock`): 1x1 -> DY-ReLU -> 3x3 dw -> DY-ReLU -> 1x1 (linear).

    Channel shuffles follow the grouped 1x1 convs when `groups` > 1 (26M). (B, in, H, W) -> (B, out, H/s, W/s).
    """

    released_names = {"conv1.0": "conv_pw.conv", "conv1.1": "conv_pw.bn", "hyper1.hyper.0": "act1.fc1",
                      "hyper1.hyper.2": "act1.fc2", "conv2.0": "conv_dw.conv", "conv2.1": "conv_dw.bn",
                      "hyper2.hyper.0": "act2.fc1", "hyper2.hyper.2": "act2.fc2", "conv3.0": "conv_pwl.conv",
                      "conv3.1": "conv_pwl.bn"}

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: float, token_dim: int, groups: int = 1,
                 token_id: int = 0) -> None:
        super().__init__()
        hidden = round(in_chs * expansion)
        self.conv_pw = ConvNormAct(in_chs, hidden, 1, groups=groups, act=None)
        self.shuffle1 = _shuffle(groups, groups > 1)
        self.act1 = TokenDynamicReLU(hidden, token_dim, token_id=token_id)
        self.conv_dw = ConvNormAct(hidden, hidden, 3, stride, groups=hidden, act=None)
        self.act2 = TokenDynamicReLU(hidden, token_dim, token_id=token_id)
        self.conv_pwl = ConvNormAct(hidden, out_chs, 1, groups=groups, act=None)
        self.shuffle2 = _shuffle(groups, groups > 1)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mix_logits: torch.Tensor | None = None) -> torch.Tensor:
        x = self.shuffle1(self.conv_pw(x))  # (B, hidden, H, W)
        mix = _token_mix(mix_logits, x)
        x = self.conv_dw(self.act1(x, tokens, mix))
        return self.shuffle2(self.conv_pwl(self.act2(x, tokens, mix)))


def _token_mix(mix_logits: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """The spatial-aware DY-ReLU's per-pixel token weights (B, T, H, W) at x's size; None passes through."""
    return None if mix_logits is None else SpatialDynamicReLU.mixing_weights(mix_logits, x.shape[-2:])


class MobileDownsample(nn.Module):
    """Stride-2 Mobile part (released `DnaBlock3`): dw 3x3/s (multiplier e1) -> DY-ReLU -> 1x1 -> dw 3x3
    (multiplier `e2`=4) -> DY-ReLU -> 1x1, plus the output of the first 1x1 (inner residual).
    (B, in, H, W) -> (B, out, H/s, W/s).
    """

    released_names = {"conv1.0": "conv_dw1.conv", "conv1.1": "conv_dw1.bn", "hyper1.hyper.0": "act1.fc1",
                      "hyper1.hyper.2": "act1.fc2", "conv2.0": "conv_pw1.conv", "conv2.1": "conv_pw1.bn",
                      "conv3.0": "conv_dw2.conv", "conv3.1": "conv_dw2.bn", "hyper3.hyper.0": "act2.fc1",
                      "hyper3.hyper.2": "act2.fc2", "conv4.0": "conv_pw2.conv", "conv4.1": "conv_pw2.bn"}

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: float, token_dim: int, groups: int = 1,
                 token_id: int = 0, expansion2: int = 4, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden1, hidden2 = round(in_chs * expansion), round(out_chs * expansion2)
        self.conv_dw1 = ConvNormAct(in_chs, hidden1, 3, stride, groups=in_chs, act=None)
        self.shuffle1 = _shuffle(in_chs, groups > 1)
        self.act1 = TokenDynamicReLU(hidden1, token_dim, token_id=token_id)
        self.conv_pw1 = ConvNormAct(hidden1, out_chs, 1, groups=groups, act=None)
        self.conv_dw2 = ConvNormAct(out_chs, hidden2, 3, 1, groups=out_chs, act=None)
        self.shuffle2 = _shuffle(out_chs, groups > 1)
        self.act2 = TokenDynamicReLU(hidden2, token_dim, token_id=token_id)
        self.conv_pw2 = ConvNormAct(hidden2, out_chs, 1, groups=groups, act=None)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mix_logits: torch.Tensor | None = None) -> torch.Tensor:
        x = self.shuffle1(self.conv_dw1(x))  # (B, hidden1, H/s, W/s)
        mix = _token_mix(mix_logits, x)
        x = self.conv_pw1(self.act1(x, tokens, mix))  # (B, out, H/s, W/s)
        y = self.act2(self.shuffle2(self.conv_dw2(x)), tokens, mix)
        return x + self.drop_path(self.conv_pw2(y))


class LiteBlock(nn.Module):
    """The light first block ("bneck-lite", released `DnaBlock3` with e2=0): dw 3x3/s (multiplier e1) + BN +
    ReLU6 -> 1x1 + BN, residual when the shape is kept; no bridges. Tokens pass through unchanged."""

    released_names = {"conv.0": "conv_dw.conv", "conv.1": "conv_dw.bn", "conv.4": "conv_pw.conv",
                      "conv.5": "conv_pw.bn"}

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: int, groups: int = 1) -> None:
        super().__init__()
        self.conv_dw = ConvNormAct(in_chs, in_chs * expansion, 3, stride, groups=in_chs, act="relu6")
        self.shuffle = _shuffle(in_chs, groups > 1)
        self.conv_pw = ConvNormAct(in_chs * expansion, out_chs, 1, groups=groups, act=None)
        self.has_skip = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.conv_pw(self.shuffle(self.conv_dw(x)))
        return (out + x if self.has_skip else out), tokens


class MobileFormerBlock(nn.Module):
    """Mobile->Former, Former, Mobile (bottleneck or stride-2 form), Mobile<-Former.

    forward(x (B, in, H, W), tokens (B, T, d)) -> (x (B, out, H/s, W/s), tokens (B, T, d)).
    `token_id` -1 selects the spatial-aware DY-ReLU (coefficients mixed per pixel with this block's
    Mobile->Former attention, averaged over heads).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: float, downsample: bool, token_dim: int,
                 groups: int = 1, token_id: int = 0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.token_id = token_id
        self.mobile_to_former = MobileToFormer(in_chs, token_dim, 2, gate=True, drop_path=drop_path)
        self.former = Former(token_dim, 4, 2, drop_path=drop_path)
        if downsample:
            self.mobile = MobileDownsample(in_chs, out_chs, stride, expansion, token_dim, groups, token_id,
                                           drop_path=drop_path)
        else:
            self.mobile = MobileBottleneck(in_chs, out_chs, stride, expansion, token_dim, groups, token_id)
        self.former_to_mobile = FormerToMobile(out_chs, token_dim, 2, drop_path=drop_path)
        self.has_skip = stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        tokens, logits = self.mobile_to_former(x, tokens)
        tokens = self.former(tokens)
        mix_logits = logits.mean(dim=1).reshape(b, -1, h, w) if self.token_id == -1 else None  # (B, T, H, W)
        out = self.mobile(x, tokens, mix_logits)
        if self.has_skip:
            out = x + self.drop_path(out)
        return self.former_to_mobile(out, tokens), tokens


class MobileFormerHead(nn.Module):
    """1x1 conv to `expansion`*C -> pool -> h-swish, concat token 0 -> FC + BatchNorm1d + h-swish -> classifier.
    forward(x (B, C, H, W), tokens (B, T, d)) -> (B, num_classes), or the pre-logits (B, num_features)."""

    def __init__(self, in_chs: int, token_dim: int, num_features: int, num_classes: int, expansion: int = 6,
                 groups: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.shuffle = _shuffle(groups, groups > 1)
        self.conv = ConvNormAct(in_chs, in_chs * expansion, 1, groups=groups, act="relu6")
        self.fc = nn.Linear(in_chs * expansion + token_dim, num_features)
        self.norm = nn.BatchNorm1d(num_features)
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.hardswish(self.conv(self.shuffle(x)).mean((2, 3)))  # (B, 6C)
        x = torch.cat((x, tokens[:, 0]), dim=1)  # (B, 6C + d)
        x = F.hardswish(self.norm(self.fc(x)))  # (B, num_features)
        return x if pre_logits else self.classifier(self.drop(x))


# ------------------------------------------------------------------------------------------------ configs
@dataclass(frozen=True)
class MFBlock:
    """A row of the released block table: `kind` lite (conv only), down (stride-2 Mobile form, second dw
    multiplier 4) or block (bottleneck); `expansion` is e1."""

    kind: Literal["lite", "down", "block"]
    expansion: int
    out_chs: int
    stride: int = 1


@dataclass(frozen=True)
class MobileFormerConfig:
    stem_chs: int
    blocks: tuple[MFBlock, ...]
    num_features: int
    token_num: int = 6
    token_dim: int = 192
    groups: int = 1


def _rows(*rows: tuple) -> tuple[MFBlock, ...]:
    return tuple(MFBlock(kind, e, c, 2 if kind == "down" else s) for kind, e, c, s in rows)


L, D, B = "lite", "down", "block"
_SMALL = _rows((L, 3, 12, 2), (B, 3, 12, 1), (D, 6, 24, 2), (B, 3, 24, 1), (D, 6, 48, 2), (B, 4, 48, 1),
               (B, 6, 64, 1), (D, 6, 96, 2), (B, 6, 96, 1))


def _large(c: tuple[int, ...], e1: int, e2: int) -> tuple[MFBlock, ...]:
    """The 151M..508M table: a lite block at c[0], then stages at widths c[1..5] (e1 / e2: the first two
    stages' bottleneck expansions)."""
    return _rows((L, 2, c[0], 1), (D, 6, c[1], 2), (B, e1, c[1], 1), (D, 6, c[2], 2), (B, e2, c[2], 1),
                 (D, 6, c[3], 2), (B, 4, c[3], 1), (B, 6, c[4], 1), (B, 6, c[4], 1), (D, 6, c[5], 2),
                 (B, 6, c[5], 1), (B, 6, c[5], 1))


MOBILE_FORMER_CONFIGS: dict[str, MobileFormerConfig] = {
    "mobileformer_508m": MobileFormerConfig(24, _large((24, 40, 72, 128, 176, 240), 3, 3), 1920),
    "mobileformer_294m": MobileFormerConfig(16, _large((16, 24, 48, 96, 128, 192), 4, 4), 1920),
    "mobileformer_214m": MobileFormerConfig(12, _large((12, 20, 40, 80, 112, 160), 3, 4), 1600),
    "mobileformer_151m": MobileFormerConfig(12, _large((12, 16, 32, 64, 88, 128), 3, 3), 1280),
    "mobileformer_96m": MobileFormerConfig(12, _rows(
        (L, 2, 12, 1), (D, 6, 16, 2), (D, 6, 32, 2), (B, 3, 32, 1), (D, 6, 64, 2), (B, 4, 64, 1), (B, 6, 88, 1),
        (D, 6, 128, 2), (B, 6, 128, 1)), 1280, token_num=4, token_dim=128),
    "mobileformer_52m": MobileFormerConfig(8, _SMALL, 1024, token_num=3, token_dim=128),
    "mobileformer_26m": MobileFormerConfig(8, _SMALL, 1024, token_num=3, token_dim=128, groups=4),
}
del L, D, B, _large


# -------------------------------------------------------------------------------------------------- model
class MobileFormerFeatures(NamedTuple):
    """What Mobile-Former's `forward_features` returns: the last map and the global tokens."""

    map: torch.Tensor  # (B, C, H/32, W/32)
    tokens: torch.Tensor  # (B, T, d)


class MobileFormer(Classifier):
    """Mobile-Former classifier; `cfg` is a `MobileFormerConfig`.

    `forward_features(x)` returns `MobileFormerFeatures(map (B, C, H/32, W/32), tokens (B, T, d))`, what
    `forward_head` takes (the head reads token 0 beside the pooled map). `drop_path_rate`
    grows linearly over the blocks as in the released code; `token_id=-1` selects the spatial-aware DY-ReLU.
    Weights initialise as the released code does (conv N(0, 2/(k*k*C_out)), Linear N(0, 0.01) with zero
    bias, tokens N(0, 1)), so its DY-ReLUs start close to, not exactly at, ReLU.
    """

    def __init__(self, cfg: MobileFormerConfig, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, token_id: int = 0, output_stride: int = 32) -> None:
        super().__init__()
        # Neither the paper nor the released code defines a dilated Mobile-Former.
        check_output_stride(output_stride, "Mobile-Former", (32,), "use its maps at strides 2..32 (features_only=True)")
        self.num_classes, self.num_features = num_classes, cfg.num_features
        self.tokens = nn.Parameter(torch.randn(cfg.token_num, cfg.token_dim))  # (T, d)
        self.stem = ConvNormAct(in_chans, cfg.stem_chs, 3, 2, act="relu6")
        blocks: list[nn.Module] = []
        chs, reduction, n = cfg.stem_chs, 2, len(cfg.blocks)
        stage_ends = {2: (cfg.stem_chs, "stem", -1)}
        for i, row in enumerate(cfg.blocks):
            rate = drop_path_rate * (i + 1) / n
            if row.kind == "lite":
                blocks.append(LiteBlock(chs, row.out_chs, row.stride, row.expansion, cfg.groups))
            else:
                blocks.append(MobileFormerBlock(chs, row.out_chs, row.stride, row.expansion, row.kind == "down",
                                                cfg.token_dim, cfg.groups, token_id, rate))
            chs, reduction = row.out_chs, reduction * row.stride
            stage_ends[reduction] = (chs, f"blocks.{i}", i)
        self.blocks = nn.ModuleList(blocks)
        self.last_mobile_to_former = MobileToFormer(chs, cfg.token_dim, 2, gate=True, drop_path=drop_path_rate)
        self.head = MobileFormerHead(chs, cfg.token_dim, cfg.num_features, num_classes, 6, cfg.groups, drop_rate)
        self.feature_info = [dict(num_chs=c, reduction=r, module=m) for r, (c, m, _) in sorted(stage_ends.items())]
        self._stage_index = [idx for _, (_, _, idx) in sorted(stage_ends.items())]
        init_weights(self, "mobile_former")

    def _initial_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens.repeat(x.shape[0], 1, 1)  # (B, T, d); a copy, not a view (module hooks need grad_fn)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens = self._initial_tokens(x)
        x = self.stem(x)
        maps = [x] if self._stage_index[0] == -1 else []
        for i, block in enumerate(self.blocks):
            x, tokens = block(x, tokens)
            if i in self._stage_index:
                maps.append(x)
        return maps

    def forward_features(self, x: torch.Tensor) -> MobileFormerFeatures:
        """(last map (B, C, H/32, W/32), tokens (B, T, d) after the final Mobile->Former)."""
        tokens = self._initial_tokens(x)
        x = self.stem(x)
        for block in self.blocks:
            x, tokens = block(x, tokens)
        tokens, _ = self.last_mobile_to_former(x, tokens)
        return MobileFormerFeatures(x, tokens)

    def forward_head(self, x: MobileFormerFeatures, pre_logits: bool = False) -> torch.Tensor:
        if not isinstance(x, tuple) or len(x) != 2:
            raise ValueError("Mobile-Former's head also reads the global tokens: pass it what forward_features(x) "
                             "returns, a (map, tokens) pair")
        return self.head(x[0], x[1], pre_logits)

    def get_classifier(self) -> nn.Module:
        return self.head.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


# ------------------------------------------------------------------------------------------------ loading
_BRIDGE_NAMES = {
    "local_global.q": "mobile_to_former.q", "local_global.alpha.0": "mobile_to_former.gate",
    "local_global.proj": "mobile_to_former.proj", "local_global.layer_norm": "mobile_to_former.norm",
    "global_block.q": "former.q", "global_block.channel_mlp": "former.proj", "global_block.layer_norm": "former.norm1",
    "global_block.ffn.0": "former.ffn.fc1", "global_block.ffn.2": "former.ffn.fc2",
    "global_block.ffn_norm": "former.norm2", "global_local.k": "former_to_mobile.k",
    "global_local.proj": "former_to_mobile.v",
}
_TOP_NAMES = {
    "tokens.weight": "tokens", "stem.0": "stem.conv", "stem.1": "stem.bn",
    **{k: "last_" + v for k, v in _BRIDGE_NAMES.items() if k.startswith("local_global.")},  # the final Mobile->Former
    "classifier.conv.1": "head.conv.conv", "classifier.conv.2": "head.conv.bn", "classifier.fc.0": "head.fc",
    "classifier.fc.1": "head.norm", "classifier.classifier.1": "head.classifier",
}


def checkpoint_filter(state_dict: dict[str, torch.Tensor], model: MobileFormer) -> dict[str, torch.Tensor]:
    """This library's layout passes unchanged; the released AAboys/MobileFormer layout (`tokens.weight`,
    `features.N...`) is renamed key by key, block by block (unknown keys raise ValueError)."""
    if "tokens.weight" not in state_dict and not any(k.startswith("features.") for k in state_dict):
        return state_dict
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"features\.(\d+)\.(.*)$", key)
        if m:
            idx, rest = int(m.group(1)), m.group(2)
            if idx >= len(model.blocks):
                raise ValueError(f"released key {key!r}: this model has only {len(model.blocks)} blocks")
            block, into = model.blocks[idx], f"blocks.{idx}."
            if isinstance(block, LiteBlock):
                new = rename_prefix(rest, LiteBlock.released_names, into)
            else:
                new = (rename_prefix(rest, _BRIDGE_NAMES, into)
                       or rename_prefix(rest, type(block.mobile).released_names, into + "mobile."))
        else:
            new = rename_prefix(key, _TOP_NAMES)
        if new is None:
            raise ValueError(f"cannot map released Mobile-Former key {key!r} onto {type(model).__name__}")
        out[new] = value
    return out


register_variants(
    "mobileformer", MobileFormer, {n: dict(kwargs=dict(cfg=c)) for n, c in MOBILE_FORMER_CONFIGS.items()},
    interpolation="bilinear",
    weights=WeightSource(note=(
        "the authors' ImageNet checkpoints are linked from the AAboys/MobileFormer README (a cloud-drive "
        "download); they are not fetched automatically: download one and pass checkpoint_path=FILE "
        "(its released key layout is remapped)")),
    checkpoint_filter=checkpoint_filter,
)
