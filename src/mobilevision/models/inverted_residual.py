"""The blocks of the inverted-residual family and the one builder that stacks them.

MobileNetV1/V2/V3, EfficientNet and MoGA are all a stem, a table of stages of these blocks and a head.
Each family writes its table as rows of `BlockSpec`; `build_stages` turns the table into the model's
`blocks` (an `nn.Sequential` of stages, each an `nn.Sequential` of blocks), with the submodule names
timm uses (`conv_pw`, `bn1`, `conv_dw`, `bn2`, `se.conv_reduce`, `se.conv_expand`, `conv_pwl`, `bn3`), so
timm's state dicts load without renaming. Activations are separate parameter-free modules here, where
timm keeps them inside its BatchNormAct2d.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from mobilevision.layers.activations import create_act
from mobilevision.layers.conv_norm_act import ConvNormAct, get_padding
from mobilevision.layers.drop_path import DropPath, drop_path_rates
from mobilevision.layers.helpers import check_choice, make_divisible
from mobilevision.layers.squeeze_excite import SqueezeExcite
from mobilevision.models.features import check_output_stride, stride_or_dilate

BLOCK_KINDS = ("ds", "ir", "cn")
SE_WIDTH_RULES = ("divisible", "block_in", "floor")


@dataclass(frozen=True)
class BlockSpec:
    """One row of a stage table: `repeats` blocks of one kind (only the first one strided).

    kind: "ds" depthwise-separable (dw kxk -> pw 1x1), "ir" inverted residual (pw expand -> dw kxk -> pw
    project), "cn" plain conv-BN-act (the 1x1 conv that closes MobileNetV3 and MoGA).
    exp: expansion ratio of an "ir" block, hidden = make_divisible(in_chs * exp, hidden_divisor).
    act: activation name, None for the model's default. se: squeeze-excite ratio, 0 for none (its width
    follows the family's `SERule`). pw_act: activation after the pointwise conv of a "ds" block
    (MobileNetV1). skip: allow the identity shortcut, taken only when stride is 1 and in == out.
    """

    kind: str
    kernel: int = 3
    stride: int = 1
    out_chs: int = 0
    exp: float = 1.0
    act: str | None = None
    se: float = 0.0
    pw_act: bool = False
    skip: bool = True
    repeats: int = 1

    def __post_init__(self) -> None:
        check_choice(self.kind, BLOCK_KINDS, "BlockSpec kind")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"BlockSpec kernel must be a positive odd int, got {self.kernel}")
        if self.stride not in (1, 2):
            raise ValueError(f"BlockSpec stride must be 1 or 2, got {self.stride}")
        if self.out_chs < 1:
            raise ValueError(f"BlockSpec out_chs must be >= 1, got {self.out_chs}")
        if self.exp <= 0:
            raise ValueError(f"BlockSpec exp must be > 0, got {self.exp}")
        if not 0.0 <= self.se < 1.0:
            raise ValueError(f"BlockSpec se ratio must be in [0, 1), got {self.se}")
        if self.repeats < 1:
            raise ValueError(f"BlockSpec repeats must be >= 1, got {self.repeats}")


@dataclass(frozen=True)
class SERule:
    """How a family sizes and activates its squeeze-excite.

    width: "divisible" make_divisible(hidden * ratio, 8) (MobileNetV3); "block_in" int(block_in * ratio)
    (EfficientNet, ratio of the block *input*); "floor" int(hidden * ratio), i.e. hidden // 4 (MoGA).
    act: the inner activation, None for the block's own. gate: "sigmoid" or "hard_sigmoid".
    """

    width: str = "divisible"
    act: str | None = "relu"
    gate: str = "hard_sigmoid"

    def __post_init__(self) -> None:
        check_choice(self.width, SE_WIDTH_RULES, "SERule width")

    def reduced_chs(self, hidden: int, block_in: int, ratio: float) -> int:
        if self.width == "divisible":
            return make_divisible(hidden * ratio, 8)
        return max(1, int((block_in if self.width == "block_in" else hidden) * ratio))

    def make(self, hidden: int, block_in: int, ratio: float, block_act: str) -> SqueezeExcite:
        return SqueezeExcite(hidden, self.reduced_chs(hidden, block_in, ratio), act=self.act or block_act,
                             gate=self.gate)


def _dw_conv(chs: int, kernel: int, stride: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(chs, chs, kernel, stride, get_padding(kernel, stride, dilation), dilation=dilation, groups=chs,
                     bias=False)


class DepthwiseSeparable(nn.Module):
    """dw kxk -> BN -> act -> [SE] -> pw 1x1 -> BN [-> act]; identity shortcut when it fits.

    MobileNetV1 units (pw_act=True, no skip) and the first block of V2/V3/EfficientNet/MoGA.
    Shapes: (B, in_chs, H, W) -> (B, out_chs, H / stride, W / stride).
    """

    def __init__(self, in_chs: int, out_chs: int, kernel: int = 3, stride: int = 1, act: str = "relu",
                 se: nn.Module | None = None, pw_act: bool = False, skip: bool = True,
                 drop_path: float = 0.0, bn_eps: float = 1e-5, dilation: int = 1) -> None:
        super().__init__()
        self.has_skip = skip and stride == 1 and in_chs == out_chs
        self.conv_dw = _dw_conv(in_chs, kernel, stride, dilation)
        self.bn1 = nn.BatchNorm2d(in_chs, eps=bn_eps)
        self.act1 = create_act(act)
        self.se = se if se is not None else nn.Identity()
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs, eps=bn_eps)
        self.act2 = create_act(act) if pw_act else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.se(self.act1(self.bn1(self.conv_dw(x))))  # (B, C_in, H', W')
        x = self.act2(self.bn2(self.conv_pw(x)))  # (B, C_out, H', W')
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class InvertedResidual(nn.Module):
    """pw expand -> BN -> act; dw kxk -> BN -> act; [SE]; pw project -> BN (linear); shortcut when it fits.

    `expand(x)` is the expansion output (B, hidden, H, W), the "expansion" feature tap of SSDLite.
    Shapes: (B, in_chs, H, W) -> (B, hidden, H', W') -> (B, out_chs, H / stride, W / stride).
    """

    def __init__(self, in_chs: int, hidden: int, out_chs: int, kernel: int = 3, stride: int = 1,
                 act: str = "relu", se: nn.Module | None = None, skip: bool = True, drop_path: float = 0.0,
                 bn_eps: float = 1e-5, dilation: int = 1) -> None:
        super().__init__()
        self.has_skip = skip and stride == 1 and in_chs == out_chs
        self.conv_pw = nn.Conv2d(in_chs, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden, eps=bn_eps)
        self.act1 = create_act(act)
        self.conv_dw = _dw_conv(hidden, kernel, stride, dilation)
        self.bn2 = nn.BatchNorm2d(hidden, eps=bn_eps)
        self.act2 = create_act(act)
        self.se = se if se is not None else nn.Identity()
        self.conv_pwl = nn.Conv2d(hidden, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs, eps=bn_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv_pw(x)))  # (B, hidden, H, W)

    def forward(self, x: torch.Tensor, expanded: torch.Tensor | None = None) -> torch.Tensor:
        """`expanded`: `expand(x)` when the caller has it already (feature taps), else computed here."""
        shortcut = x
        x = self.expand(x) if expanded is None else expanded
        x = self.act2(self.bn2(self.conv_dw(x)))  # (B, hidden, H', W')
        x = self.bn3(self.conv_pwl(self.se(x)))  # (B, C_out, H', W')
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


def make_block(spec: BlockSpec, in_chs: int, stride: int, *, act: str, se_rule: SERule,
               hidden_divisor: int = 8, drop_path: float = 0.0, bn_eps: float = 1e-5, dilation: int = 1) -> nn.Module:
    """One block of `spec` taking `in_chs` channels (stride and depthwise dilation given separately)."""
    block_act = spec.act or act
    if spec.kind == "cn":
        # timm's ConvBnAct block names: `conv`, `bn1`
        return ConvNormAct(in_chs, spec.out_chs, spec.kernel, stride, act=block_act, bn_eps=bn_eps,
                           names=("conv", "bn1", "act1"))
    if spec.kind == "ds":
        se = se_rule.make(in_chs, in_chs, spec.se, block_act) if spec.se else None
        return DepthwiseSeparable(in_chs, spec.out_chs, spec.kernel, stride, block_act, se, spec.pw_act,
                                  spec.skip, drop_path, bn_eps, dilation)
    hidden = make_divisible(in_chs * spec.exp, hidden_divisor)
    se = se_rule.make(hidden, in_chs, spec.se, block_act) if spec.se else None
    return InvertedResidual(in_chs, hidden, spec.out_chs, spec.kernel, stride, block_act, se, spec.skip,
                            drop_path, bn_eps, dilation)


FEATURE_LOCATIONS = ("", "expansion")
# registry families whose models `build_stages` builds (they accept output_stride, dilate_first, feature_location)
FAMILIES = ("mobilenetv1", "mobilenetv2", "mobilenetv3", "efficientnet", "moga")


def build_stages(
    stages: Sequence[Sequence[BlockSpec]],
    in_chs: int,
    *,
    act: str,
    se_rule: SERule = SERule(),
    hidden_divisor: int = 8,
    drop_path_rate: float = 0.0,
    bn_eps: float = 1e-5,
    output_stride: int = 32,
    dilate_first: bool = False,
    feature_location: str = "",
) -> tuple[nn.Sequential, list[dict], int]:
    """Turn a stage table into `blocks`: (nn.Sequential of stages, feature_info, output channels).

    Block i of N (counted over all stages, from 0) gets drop-path rate `drop_path_rate * i / N`, as in TF
    EfficientNet and timm's EfficientNetBuilder. A feature map is taken at the end of every stage that is
    followed by a strided stage or ends the network, plus the stem output (`bn1`, at reduction 2) when the first
    block is strided, so the maps have reductions 2, 4, 8, 16, 32.

    `output_stride` 8 or 16: the strides that would go beyond it become 1 and the later depthwise convs are
    dilated instead (DeepLab); the first block of a dilated stage keeps the previous dilation (TF slim, timm)
    unless `dilate_first` (torchvision's MobileNetV3 `dilated=True`). feature_info's reductions follow.
    `feature_location="expansion"`: each tap before a strided stage is instead the expansion output
    (`conv_pw` -> BN -> act, before the strided depthwise conv) of that stage's first block (the SSDLite taps
    of the MobileNetV2/V3 papers); the tap that ends the network stays the network output. Taps whose next
    block has no expansion keep the stage output. Each entry's `module` names where its map is taken.
    """
    check_output_stride(output_stride, "inverted-residual")
    if feature_location not in FEATURE_LOCATIONS:
        raise ValueError(f"feature_location {feature_location!r} not accepted; use one of {FEATURE_LOCATIONS}")
    if not stages or any(len(s) == 0 for s in stages):
        raise ValueError("build_stages needs a non-empty list of non-empty stages")
    rates = drop_path_rates(drop_path_rate, [sum(spec.repeats for spec in stage) for stage in stages], endpoint=False)
    reduction, dilation = 2, 1
    taps: list[tuple[int, int, int]] = []  # (stage index whose output is tapped, channels, reduction)
    if stages[0][0].stride > 1:
        taps.append((-1, in_chs, reduction))
    out_stages = []
    for s, stage in enumerate(stages):
        blocks = []
        for spec in stage:
            for r in range(spec.repeats):
                prev_dilation = dilation
                stride, dilation = stride_or_dilate(spec.stride if r == 0 else 1, reduction, dilation, output_stride)
                block_spec, block_dilation = spec, prev_dilation
                if dilation > prev_dilation:  # it replaces a strided block: no shortcut
                    block_spec = dataclasses.replace(spec, skip=False)
                    block_dilation = dilation if dilate_first else prev_dilation
                reduction *= stride
                blocks.append(make_block(block_spec, in_chs, stride, act=act, se_rule=se_rule,
                                         hidden_divisor=hidden_divisor, drop_path=rates[s][len(blocks)],
                                         bn_eps=bn_eps, dilation=block_dilation))
                in_chs = spec.out_chs
        out_stages.append(nn.Sequential(*blocks))
        if s + 1 == len(stages) or stages[s + 1][0].stride > 1:
            taps.append((s, in_chs, reduction))
    blocks = nn.Sequential(*out_stages)
    feature_info = []
    for s, chs, red in taps:
        nxt = blocks[s + 1][0] if s + 1 < len(blocks) else None
        if feature_location == "expansion" and isinstance(nxt, InvertedResidual):
            feature_info.append(dict(num_chs=nxt.conv_pw.out_channels, reduction=red,
                                     module=f"blocks.{s + 1}.0.conv_pw"))
        else:
            feature_info.append(dict(num_chs=chs, reduction=red, module="bn1" if s < 0 else f"blocks.{s}"))
    return blocks, feature_info, in_chs
