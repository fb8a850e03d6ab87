"""MobileViT v1 (Mehta & Rastegari, ICLR 2022, arXiv 2110.02178): MobileNetV2 blocks + MobileViT blocks.

Layout: stem conv3x3/s2 -> stage 0 (MV2, s1) -> stage 1 (3 MV2, first s2) -> stages 2-4 (MV2 s2 +
MobileViT block) -> 1x1 conv to `num_features` -> global pool -> classifier. SiLU everywhere.

Module names follow timm's `mobilevit_*` (`stem`, `stages.i.j`, `final_conv`, `head.fc`), so timm state
dicts load as they are; `checkpoint_filter` also maps the apple/ml-cvnets layout (`conv_1`, `layer_N`,
`conv_1x1_exp`, `classifier.fc`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mobilevision.models.features import Classifier, check_output_stride, stage_outputs, stride_or_dilate
from mobilevision.layers.attention import TransformerEncoderLayer
from mobilevision.layers.classifier import ClassifierHead
from mobilevision.layers.conv_norm_act import ConvNormAct
from mobilevision.layers.drop_path import DropPath
from mobilevision.layers.helpers import make_divisible
from mobilevision.layers.weight_init import init_weights
from mobilevision.models.checkpoint import rename_prefix
from mobilevision.models.registry import WeightSource, register_variants


class MV2Block(nn.Module):
    """MobileNetV2 block of MobileViT (ConvNormAct units, cvnets / timm names): 1x1 expand (BN, act) -> 3x3
    depthwise/stride (BN, act) -> 1x1 project (BN, linear).

    Residual only when stride 1 and in_chs == out_chs. Shapes: (B, in, H, W) -> (B, out, H/s, W/s).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: float, act: str = "silu",
                 drop_path: float = 0.0, dilation: int = 1) -> None:
        super().__init__()
        mid = make_divisible(in_chs * expansion)
        self.conv1_1x1 = ConvNormAct(in_chs, mid, 1, act=act)
        self.conv2_kxk = ConvNormAct(mid, mid, 3, stride, groups=mid, dilation=dilation, act=act)
        self.conv3_1x1 = ConvNormAct(mid, out_chs, 1, act=None)
        self.has_skip = stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
        return x + self.drop_path(out) if self.has_skip else out


def unfold_patches(x: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B * P, N, C): P = ph*pw positions inside a patch, N = (H/ph)*(W/pw) patches.

    Attention then runs across patches, separately for each intra-patch position. Only reshape and
    permute, never a tensor of rank above 4, so it exports to ONNX / CoreML.
    """
    b, c, h, w = x.shape
    ph, pw = patch
    nh, nw = h // ph, w // pw
    x = x.reshape(b * c * nh, ph, nw, pw).transpose(1, 2)  # (B*C*nh, nw, ph, pw)
    x = x.reshape(b, c, nh * nw, ph * pw).permute(0, 3, 2, 1)  # (B, P, N, C)
    return x.reshape(b * ph * pw, nh * nw, c)


def fold_patches(x: torch.Tensor, batch: int, size: tuple[int, int], patch: tuple[int, int]) -> torch.Tensor:
    """Inverse of `unfold_patches`: (B * P, N, C) -> (B, C, H, W)."""
    h, w = size
    ph, pw = patch
    nh, nw = h // ph, w // pw
    c = x.shape[-1]
    x = x.reshape(batch, ph * pw, nh * nw, c).permute(0, 3, 2, 1)  # (B, C, N, P)
    x = x.reshape(batch * c * nh, nw, ph, pw).transpose(1, 2)  # (B*C*nh, ph, nw, pw)
    return x.reshape(batch, c, h, w)


class MobileViTBlock(nn.Module):
    """Local 3x3 conv -> 1x1 to d -> unfold -> L pre-norm transformer layers + LN -> fold -> 1x1 back to C
    -> concat with the block input -> 3x3 fuse. No residual around the block.

    Sizes the patch does not divide: as the reference code (cvnets, timm) does, the d-channel map is
    resized bilinearly up to the next multiple of the patch before unfolding and back after folding, so
    any input size >= 1 works. Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, chs: int, transformer_dim: int, depth: int, num_heads: int = 4, mlp_ratio: float = 2.0,
                 patch_size: int = 2, act: str = "silu", drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, dilation: int = 1) -> None:
        super().__init__()
        self.patch = (patch_size, patch_size)
        self.conv_kxk = ConvNormAct(chs, chs, 3, dilation=dilation, act=act)  # cvnets dilates only this conv
        self.conv_1x1 = nn.Conv2d(chs, transformer_dim, 1, bias=False)
        self.transformer = nn.Sequential(*[
            TransformerEncoderLayer(transformer_dim, num_heads, mlp_ratio, qkv_bias=True, act=act, drop=drop,
                                    attn_drop=attn_drop, drop_path=drop_path)
            for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(transformer_dim)
        self.conv_proj = ConvNormAct(transformer_dim, chs, 1, act=act)
        self.conv_fusion = ConvNormAct(2 * chs, chs, 3, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        y = self.conv_1x1(self.conv_kxk(x))  # (B, d, H, W)
        b, _, h, w = y.shape
        ph, pw = self.patch
        new_h, new_w = (h + ph - 1) // ph * ph, (w + pw - 1) // pw * pw  # integer maths: symbolic under export
        # A graph exported with symbolic H / W must serve every size, so it always resizes (an identity when
        # the patches divide); eager runs and fixed-size exports resize only when needed.
        symbolic = isinstance(h, torch.SymInt) or isinstance(w, torch.SymInt) or torch.jit.is_tracing()
        resized = (new_h, new_w) != (h, w) or symbolic
        if resized:
            y = F.interpolate(y, size=(new_h, new_w), mode="bilinear", align_corners=False)
        t = self.norm(self.transformer(unfold_patches(y, self.patch)))  # (B*P, N, d)
        y = fold_patches(t, b, (new_h, new_w), self.patch)
        if resized:
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        y = self.conv_proj(y)  # (B, C, H, W)
        return self.conv_fusion(torch.cat((shortcut, y), dim=1))


@dataclass(frozen=True)
class MobileViTStage:
    """One stage: `num_mv2` MV2 blocks (the first with `stride`), then optionally one MobileViT block."""

    out_chs: int
    num_mv2: int
    stride: int
    transformer_dim: int | None = None
    transformer_depth: int = 0


@dataclass(frozen=True)
class MobileViTConfig:
    """A variant (paper Table 4 / cvnets config): stages, MV2 expansion, stem and head widths."""

    stages: tuple[MobileViTStage, ...]
    expansion: float
    stem_chs: int = 16
    num_features: int = 640
    num_heads: int = 4
    mlp_ratio: float = 2.0
    patch_size: int = 2


def _stages(chs: tuple[int, ...], dims: tuple[int, int, int]) -> tuple[MobileViTStage, ...]:
    return (
        MobileViTStage(chs[0], 1, 1),
        MobileViTStage(chs[1], 3, 2),
        MobileViTStage(chs[2], 1, 2, dims[0], 2),
        MobileViTStage(chs[3], 1, 2, dims[1], 4),
        MobileViTStage(chs[4], 1, 2, dims[2], 3),
    )


MOBILEVIT_CONFIGS: dict[str, MobileViTConfig] = {
    "mobilevit_xxs": MobileViTConfig(_stages((16, 24, 48, 64, 80), (64, 80, 96)), expansion=2.0, num_features=320),
    "mobilevit_xs": MobileViTConfig(_stages((32, 48, 64, 80, 96), (96, 120, 144)), expansion=4.0, num_features=384),
    "mobilevit_s": MobileViTConfig(_stages((32, 64, 96, 128, 160), (144, 192, 240)), expansion=4.0,
                                   num_features=640),
}


class MobileViT(Classifier):
    """MobileViT v1 classifier; `cfg` is a `MobileViTConfig`.

    `transformer_drop` / `attn_drop` are the transformer dropouts (cvnets recipe: 0.05 for XXS, 0.1 for
    XS/S, attention 0); `drop_rate` is the classifier dropout (cvnets: 0.1); timm's defaults are all 0.
    `output_stride` 16 (the paper's DeepLabv3 setting) or 8 turns the last strides into dilation as cvnets
    does: the stage's first MV2 block keeps the previous dilation, the MobileViT block's local 3x3 conv (and
    later MV2 blocks) take the new one.
    """

    def __init__(self, cfg: MobileViTConfig, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, transformer_drop: float = 0.0, attn_drop: float = 0.0,
                 output_stride: int = 32) -> None:
        super().__init__()
        check_output_stride(output_stride, "MobileViT")
        self.num_classes = num_classes
        self.num_features = cfg.num_features
        self.drop_rate = drop_rate
        self.stem = ConvNormAct(in_chans, cfg.stem_chs, 3, 2, act="silu")
        stages, chs, reduction, dilation = [], cfg.stem_chs, 2, 1
        self.feature_info = []
        for i, st in enumerate(cfg.stages):
            blocks: list[nn.Module] = []
            prev_dilation = dilation
            stride, dilation = stride_or_dilate(st.stride, reduction, dilation, output_stride)  # as cvnets
            for j in range(st.num_mv2):
                blocks.append(MV2Block(chs, st.out_chs, stride if j == 0 else 1, cfg.expansion,
                                       drop_path=drop_path_rate, dilation=prev_dilation if j == 0 else dilation))
                chs = st.out_chs
            if st.transformer_dim is not None:
                blocks.append(MobileViTBlock(
                    chs, st.transformer_dim, st.transformer_depth, cfg.num_heads, cfg.mlp_ratio, cfg.patch_size,
                    drop=transformer_drop, attn_drop=attn_drop, drop_path=drop_path_rate, dilation=dilation,
                ))
            stages.append(nn.Sequential(*blocks))
            reduction *= stride
            self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.final_conv = ConvNormAct(chs, cfg.num_features, 1, act="silu")
        self.feature_info[-1] = dict(num_chs=cfg.num_features, reduction=reduction, module="final_conv")
        self.head = ClassifierHead(cfg.num_features, num_classes, drop_rate)
        init_weights(self, "cvnets")

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = stage_outputs(self.stem(x), self.stages)  # stem: (B, 16, H/2, W/2)
        maps[-1] = self.final_conv(maps[-1])  # (B, num_features, H/32, W/32)
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.stages(self.stem(x)))


# ----------------------------------------------------------------------------------------------- loading
_CVNETS_BLOCK = {  # cvnets MV2 / MobileViT sub-module prefixes -> ours (after `layer_N.J.`)
    "block.exp_1x1.block.conv": "conv1_1x1.conv", "block.exp_1x1.block.norm": "conv1_1x1.bn",
    "block.conv_3x3.block.conv": "conv2_kxk.conv", "block.conv_3x3.block.norm": "conv2_kxk.bn",
    "block.red_1x1.block.conv": "conv3_1x1.conv", "block.red_1x1.block.norm": "conv3_1x1.bn",
    "local_rep.conv_3x3.block.conv": "conv_kxk.conv", "local_rep.conv_3x3.block.norm": "conv_kxk.bn",
    "local_rep.conv_1x1.block.conv": "conv_1x1",
    "conv_proj.block.conv": "conv_proj.conv", "conv_proj.block.norm": "conv_proj.bn",
    "fusion.block.conv": "conv_fusion.conv", "fusion.block.norm": "conv_fusion.bn",
}
_CVNETS_LAYER = {  # inside `global_rep.K.`
    "pre_norm_mha.0": "norm1", "pre_norm_mha.1.qkv_proj": "attn.qkv", "pre_norm_mha.1.out_proj": "attn.proj",
    "pre_norm_ffn.0": "norm2", "pre_norm_ffn.1": "mlp.fc1", "pre_norm_ffn.4": "mlp.fc2",
}


_CVNETS_TOP = {"conv_1.block.conv": "stem.conv", "conv_1.block.norm": "stem.bn", "classifier.fc": "head.fc",
               "conv_1x1_exp.block.conv": "final_conv.conv", "conv_1x1_exp.block.norm": "final_conv.bn"}


def _remap_cvnets(state: dict[str, torch.Tensor], model: MobileViT) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        new = rename_prefix(key, _CVNETS_TOP)
        m = re.match(r"layer_(\d)\.(\d+)\.(.*)$", key)
        if m:
            stage, idx, rest = int(m.group(1)) - 1, int(m.group(2)), m.group(3)
            if not (0 <= stage < len(model.stages) and idx < len(model.stages[stage])):
                raise ValueError(f"ml-cvnets key {key!r} names a block this model does not have")
            into = f"stages.{stage}.{idx}."
            g = re.match(r"global_rep\.(\d+)\.(.*)$", rest)
            if g is None:
                new = rename_prefix(rest, _CVNETS_BLOCK, into)
            elif int(g.group(1)) == len(model.stages[stage][idx].transformer):  # the LayerNorm after the last layer
                new = f"{into}norm.{g.group(2)}"
            else:
                new = rename_prefix(g.group(2), _CVNETS_LAYER, f"{into}transformer.{g.group(1)}.")
        if new is None:
            raise ValueError(f"cannot map ml-cvnets MobileViT key {key!r} to this model")
        out[new] = value
    return out


def checkpoint_filter(state_dict: dict[str, torch.Tensor], model: MobileViT) -> dict[str, torch.Tensor]:
    """Our and timm's layouts pass unchanged (same names); the ml-cvnets layout (`conv_1.block...`) is remapped."""
    if any(k.startswith(("conv_1.block.", "layer_1.")) for k in state_dict):
        return _remap_cvnets(state_dict, model)
    return state_dict


register_variants(
    "mobilevit", MobileViT, {n: dict(kwargs=dict(cfg=c), weights=WeightSource(hf_hub_id=f"timm/{n}.cvnets_in1k"))
                             for n, c in MOBILEVIT_CONFIGS.items()},
    input_size=(3, 256, 256), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),  # cvnets feeds [0, 1] pixels as they are
    crop_pct=0.9, checkpoint_filter=checkpoint_filter,
)
