"""ConvNeXt (Liu et al., CVPR 2022) and ConvNeXt V2 (Woo et al., CVPR 2023).

Stem: conv 4x4 s4 -> LayerNorm. Before stages 2-4: LayerNorm -> conv 2x2 s2. Block: dw 7x7 -> LayerNorm ->
Linear(C, 4C) -> GELU -> [GRN, V2] -> Linear(4C, C) -> [layer-scale gamma, V1] -> drop-path -> + input.
Head: global mean -> LayerNorm -> Linear, whose weight and bias are multiplied by `head_init_scale`.
Drop-path rates grow linearly over all blocks (0 .. drop_path_rate).

Module names follow timm (`stem.0/1`, `stages.i.downsample.0/1`, `stages.i.blocks.j.{conv_dw,norm,mlp.fc1,
mlp.grn,mlp.fc2,gamma}`, `head.norm`, `head.fc`). timm builds convnextv2_atto..nano with 1x1 convs instead of
Linear layers; `checkpoint_filter` reshapes those weights, and remaps the official facebookresearch layouts.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

from mobilevision.models.features import Classifier, check_output_stride, stride_or_dilate
from mobilevision.layers.classifier import ClassifierHead
from mobilevision.layers.drop_path import DropPath, drop_path_rates
from mobilevision.layers.mlp import Mlp
from mobilevision.layers.norms import LayerNorm2d
from mobilevision.layers.weight_init import init_weights
from mobilevision.models.checkpoint import rename_prefix
from mobilevision.models.registry import WeightSource, register_variants


class ConvNeXtBlock(nn.Module):
    """One ConvNeXt (V1: layer-scale) or ConvNeXt V2 (GRN, no layer-scale) block. (B, C, H, W) -> same.

    `dilation` dilates the depthwise conv (output stride below 32)."""

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: float = 4.0, ls_init_value: float | None = 1e-6,
                 use_grn: bool = False, drop_path: float = 0.0, dilation: int = 1) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2 * dilation, dilation=dilation,
                                 groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), act="gelu", grn=use_grn)
        self.gamma = nn.Parameter(torch.full((dim,), float(ls_init_value))) if ls_init_value is not None else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_dw(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.mlp(self.norm(y))
        if self.gamma is not None:
            y = y * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))  # (B, C, H, W)


class ConvNeXtStage(nn.Module):
    """downsample (Identity in stage 1, else LayerNorm -> conv 2x2 s2) then `depth` blocks.

    `dilation` (in, out) > 1 replaces the stride: the 2x2 conv runs at stride 1 with dilation `in` and 'same'
    padding (one extra row / column at the bottom / right, as timm), the blocks' depthwise convs at `out`.
    """

    def __init__(self, in_chs: int, out_chs: int, depth: int, rates: Sequence[float], downsample: bool = True,
                 dilation: tuple[int, int] = (1, 1), **block_kwargs) -> None:
        super().__init__()
        if not downsample:
            self.downsample = nn.Identity()
        elif dilation[1] == 1:
            self.downsample = nn.Sequential(LayerNorm2d(in_chs, eps=1e-6), nn.Conv2d(in_chs, out_chs, 2, stride=2))
        else:
            self.downsample = nn.Sequential(LayerNorm2d(in_chs, eps=1e-6),
                                            nn.Conv2d(in_chs, out_chs, 2, dilation=dilation[0], padding="same"))
        self.blocks = nn.Sequential(*[ConvNeXtBlock(out_chs, drop_path=rates[j], dilation=dilation[1], **block_kwargs)
                                      for j in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXt(Classifier):
    """ConvNeXt V1 (`ls_init_value=1e-6`, `use_grn=False`) and V2 (`ls_init_value=None`, `use_grn=True`).

    Four stages at reductions 4, 8, 16, 32 with widths `dims` and `depths` blocks; `output_stride` 16 or 8
    dilates the last one or two stages instead (same weights).
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        ls_init_value: float | None = 1e-6,
        use_grn: bool = False,
        kernel_size: int = 7,
        head_init_scale: float = 1.0,
        num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        check_output_stride(output_stride, "ConvNeXt")
        if len(depths) != len(dims) or not depths:
            raise ValueError(f"depths {tuple(depths)} and dims {tuple(dims)} must be non-empty and of equal length")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive int, got {kernel_size}")
        self.num_classes = num_classes
        self.num_features = dims[-1]
        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        rates = drop_path_rates(drop_path_rate, depths)
        stages, self.feature_info, prev, reduction, dilation = [], [], dims[0], 4, 1
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            prev_dilation = dilation
            stride, dilation = stride_or_dilate(1 if i == 0 else 2, reduction, dilation, output_stride)
            reduction *= stride
            stages.append(ConvNeXtStage(prev, dim, depth, rates[i], downsample=i > 0,
                                        dilation=(prev_dilation, dilation), kernel_size=kernel_size,
                                        ls_init_value=ls_init_value, use_grn=use_grn))
            self.feature_info.append({"num_chs": dim, "reduction": reduction, "module": f"stages.{i}"})
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(dims[-1], num_classes, drop_rate, norm=nn.LayerNorm(dims[-1], eps=1e-6),
                                   init="trunc_normal")
        init_weights(self, "trunc_normal")
        if isinstance(self.head.fc, nn.Linear):
            with torch.no_grad():
                self.head.fc.weight.mul_(head_init_scale)
                self.head.fc.bias.mul_(head_init_scale)

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith(".gamma")}


# ---------------------------------------------------------------------------------------------- checkpoints

def checkpoint_filter(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Our / timm's layout (reshaping timm's 1x1-conv MLP weights) and the official layouts.

    Official facebookresearch/ConvNeXt and ConvNeXt-V2 keys: `downsample_layers.0.{0,1}` (stem conv, LN),
    `downsample_layers.{i}.{0,1}` (LN, conv), `stages.{i}.{j}.{dwconv,norm,pwconv1,pwconv2,gamma}`,
    V2 `stages.{i}.{j}.grn.{gamma,beta}` of shape (1, 1, 1, C), `norm.*`, `head.*`.
    """
    if "downsample_layers.0.0.weight" in state_dict:
        out = {}
        for k, v in state_dict.items():
            k = k.replace("downsample_layers.0.", "stem.")
            k = re.sub(r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample.", k)
            k = re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", k)
            k = k.replace(".dwconv.", ".conv_dw.").replace(".pwconv1.", ".mlp.fc1.").replace(".pwconv2.", ".mlp.fc2.")
            if ".grn." in k:
                k = k.replace(".grn.gamma", ".mlp.grn.weight").replace(".grn.beta", ".mlp.grn.bias")
                v = v.reshape(-1)
            out[rename_prefix(k, {"norm": "head.norm", "head": "head.fc"}) or k] = v
        return out
    # timm's convnextv2_atto..nano (conv_mlp=True): (out, in, 1, 1) MLP weights -> Linear (out, in)
    own = model.state_dict()
    return {
        k: (v.reshape(own[k].shape) if k in own and ".mlp.fc" in k and v.ndim == 4 and own[k].ndim == 2 else v)
        for k, v in state_dict.items()
    }


# ---------------------------------------------------------------------------------------------- variants

_DEEP = (3, 3, 27, 3)
# size: (depths, stage-1 width; the width doubles at each stage)
_SIZES = {"atto": ((2, 2, 6, 2), 40), "femto": ((2, 2, 6, 2), 48), "pico": ((2, 2, 6, 2), 64),
          "nano": ((2, 2, 8, 2), 80), "tiny": ((3, 3, 9, 3), 96), "small": (_DEEP, 96), "base": (_DEEP, 128),
          "large": (_DEEP, 192), "xlarge": (_DEEP, 256), "huge": (_DEEP, 352)}


def _record(family: str, size: str) -> dict:
    """The registry row of `family`_`size`: timm's weights on the Hub; the official release file (the 224 px EMA
    weights, in `note`) loads too, through checkpoint_filter (its sha256 is not recorded). The ImageNet-1k
    weights of convnext_xlarge are the 22k-pre-trained ones."""
    name, v2 = f"{family}_{size}", family == "convnextv2"
    if v2:
        tag, url = "fcmae_ft_in1k", f"https://dl.fbaipublicfiles.com/convnext/convnextv2/im1k/{name}_1k_224_ema.pt"
    else:
        tag = "fb_in22k_ft_in1k" if size == "xlarge" else "fb_in1k"
        url = f"https://dl.fbaipublicfiles.com/convnext/{name}_{'22k_1k' if size == 'xlarge' else '1k'}_224_ema.pth"
    depths, width = _SIZES[size]
    return dict(family=family, kwargs={"depths": depths, "dims": tuple(width * 2 ** i for i in range(4)),
                                       "ls_init_value": None if v2 else 1e-6, "use_grn": v2},
                weights=WeightSource(hf_hub_id=f"timm/{name}.{tag}", note=f"official release: {url}"))


register_variants("convnext", ConvNeXt, {
    f"{family}_{size}": _record(family, size)
    for family, sizes in (("convnext", ("tiny", "small", "base", "large", "xlarge")),
                          ("convnextv2", ("atto", "femto", "pico", "nano", "tiny", "base", "large", "huge")))
    for size in sizes
}, checkpoint_filter=checkpoint_filter)
