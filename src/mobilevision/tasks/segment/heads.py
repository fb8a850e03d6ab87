"""Segmentation heads over a backbone's stage maps: DeepLabv3 (ASPP), LR-ASPP, Semantic FPN, FCN (aux).

Every head takes the list of maps it was built for and returns logits at the resolution of its finest input
map; the `Segmenter` upsamples them to the input size. Global pooling is `mean` over H, W (never adaptive
pooling to 1x1), which is exact and exports with dynamic sizes.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mobilevision.layers.atrous_conv import AtrousConv2d
from mobilevision.layers.conv_norm_act import ConvNormAct


class ASPPPooling(nn.Module):
    """Image pooling branch: mean over H, W -> 1x1 conv -> BN -> ReLU -> broadcast back.
    (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.proj = ConvNormAct(in_chs, out_chs, 1, act="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x.mean((2, 3), keepdim=True))  # (B, C_out, 1, 1)
        return y.expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3): a 1x1 branch, one dilated 3x3 branch per rate, image pooling;
    concatenated -> 1x1 projection -> BN -> ReLU -> dropout. (B, C_in, H, W) -> (B, out_chs, H, W)."""

    def __init__(self, in_chs: int, rates: Sequence[int], out_chs: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        self.branches = nn.ModuleList([ConvNormAct(in_chs, out_chs, 1, act="relu")] + [
            ConvNormAct(in_chs, out_chs, 3, dilation=int(r), act="relu", conv_layer=AtrousConv2d) for r in rates])
        self.pool = ASPPPooling(in_chs, out_chs)
        self.project = ConvNormAct(out_chs * (len(rates) + 2), out_chs, 1, act="relu")
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = [b(x) for b in self.branches] + [self.pool(x)]
        return self.dropout(self.project(torch.cat(ys, dim=1)))


class DeepLabV3Head(nn.Module):
    """ASPP on the last map -> [3x3 conv 256 + BN + ReLU (torchvision)] -> 1x1 classifier.

    maps: list whose last entry is (B, C_in, H/os, W/os) -> (B, num_classes, H/os, W/os).
    """

    def __init__(self, in_chs: int, num_classes: int, rates: Sequence[int] = (12, 24, 36), channels: int = 256,
                 dropout: float = 0.5, extra_conv: bool = True) -> None:
        super().__init__()
        self.aspp = ASPP(in_chs, rates, channels, dropout)
        self.conv = ConvNormAct(channels, channels, 3, act="relu") if extra_conv else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.conv(self.aspp(maps[-1])))


class FCNHead(nn.Module):
    """torchvision's auxiliary head: 3x3 conv to C_in/4 + BN + ReLU + dropout 0.1 -> 1x1 classifier.
    (B, C_in, h, w) -> (B, num_classes, h, w)."""

    def __init__(self, in_chs: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_chs, in_chs // 4, 3, act="relu")
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(in_chs // 4, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


class LRASPPHead(nn.Module):
    """Lite R-ASPP (MobileNetV3 paper, torchvision's form).

    high (B, C_h, H/16, W/16): cbr = 1x1 -> BN -> ReLU, gated by sigmoid(1x1(mean over H, W)); upsampled
    bilinearly to low (B, C_l, H/8, W/8); out = 1x1(low) + up(1x1(gated)) -> (B, num_classes, H/8, W/8).
    """

    def __init__(self, low_chs: int, high_chs: int, num_classes: int, channels: int = 128) -> None:
        super().__init__()
        self.cbr = ConvNormAct(high_chs, channels, 1, act="relu")
        self.scale = nn.Conv2d(high_chs, channels, 1, bias=False)
        self.low_classifier = nn.Conv2d(low_chs, num_classes, 1)
        self.high_classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        low, high = maps[0], maps[-1]
        x = self.cbr(high) * torch.sigmoid(self.scale(high.mean((2, 3), keepdim=True)))  # (B, ch, h16, w16)
        # the 1x1 classifier and bilinear upsampling are both linear (with weights summing to 1), so they commute:
        # classify the 128-channel map first and upsample num_classes channels, at a quarter of the pixels
        x = F.interpolate(self.high_classifier(x), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + x


class FPNNeck(nn.Module):
    """Feature pyramid (Lin et al.): 1x1 laterals (bias, no norm) summed top-down with nearest upsampling,
    then a 3x3 conv per level. maps (B, C_i, H/r_i, W/r_i) -> list of (B, channels, H/r_i, W/r_i)."""

    def __init__(self, in_chs: Sequence[int], channels: int = 256) -> None:
        super().__init__()
        self.laterals = nn.ModuleList([nn.Conv2d(c, channels, 1) for c in in_chs])
        self.outputs = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=1) for _ in in_chs])

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        lat = [conv(m) for conv, m in zip(self.laterals, maps)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="nearest")
        return [conv(x) for conv, x in zip(self.outputs, lat)]


class SemanticFPNHead(nn.Module):
    """Panoptic FPN's semantic branch (Kirillov et al.; PoolFormer's segmentation setting) on an FPN.

    Level i (reduction r_i) gets max(1, log2(r_i / r_0)) blocks of 3x3 conv -> BN -> ReLU, each but the last
    level-0 one followed by a 2x bilinear upsample (to the next finer level's exact size); the levels are summed
    -> dropout 0.1 -> 1x1 classifier. maps (FPN outputs) -> (B, num_classes, H/r_0, W/r_0).
    """

    def __init__(self, in_chs: Sequence[int], reductions: Sequence[int], num_classes: int, fpn_channels: int = 256,
                 channels: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.fpn = FPNNeck(in_chs, fpn_channels)
        self.ups = [int(round(math.log2(r / reductions[0]))) for r in reductions]
        self.scale_heads = nn.ModuleList([nn.ModuleList([
            ConvNormAct(fpn_channels if k == 0 else channels, channels, 3, act="relu") for k in range(max(1, ups))])
            for ups in self.ups])
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        feats = self.fpn(maps)
        out = None
        for i, (blocks, x) in enumerate(zip(self.scale_heads, feats)):
            for k, block in enumerate(blocks):
                x = block(x)
                if self.ups[i] > 0:  # upsample to the exact size of the level one step finer
                    x = F.interpolate(x, size=feats[i - k - 1].shape[-2:], mode="bilinear", align_corners=False)
            out = x if out is None else out + x
        return self.classifier(self.dropout(out))
