"""MetaFormer: PoolFormer v1 (Yu et al., CVPR 2022) and the MetaFormer baselines PoolFormerV2, ConvFormer and
CAFormer (Yu et al., TPAMI 2024), all from one block with the token mixer as a per-stage argument.

Block: x = res_scale(x) + layer_scale(drop_path(mixer(norm1(x)))), then the same with the channel MLP.
Module names follow timm (`stem`, `stages.i.downsample`, `stages.i.blocks.j.{norm1,token_mixer,...}`, `head`),
so timm checkpoints load unchanged; the official sail-sg/poolformer layout is remapped by `checkpoint_filter`.

PoolFormer v1 follows the official code: its head normalises the whole final map (GroupNorm over C, H, W) and
then pools. timm pools first and then applies a channel LayerNorm, which is not the same function, so with timm's
weights `forward_features` (stem + stages) is identical and the logits differ slightly.

ConvFormer / CAFormer: the MLP head's LayerNorm uses eps 1e-6 as in timm (whose weights `pretrained=True` fetches);
the official code uses 1e-5 (pass `head_mlp_norm_eps=1e-5` to reproduce it; logits move by ~1e-4 at random init).

`output_stride=16 | 8` (dense backbones) runs the last downsampling convs at stride 1 with dilation and
dilates the SepConv mixers' depthwise convs; models with the pooling or random mixer in a dilated stage raise
ValueError (an average pool has no dilated form).

Hybrid stages (PoolFormer paper, Table 6): `create_model("poolformer_s12",
token_mixers=("pool", "pool", "attention", "attention"))`.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

from mobilevision.models.features import Classifier, check_output_stride, stride_or_dilate
from mobilevision.layers.classifier import ClassifierHead
from mobilevision.layers.drop_path import DropPath, drop_path_rates
from mobilevision.layers.helpers import check_choice
from mobilevision.layers.layer_scale import LayerScale
from mobilevision.layers.mlp import Mlp
from mobilevision.layers.norms import GroupNorm1, channel_layer_norm
from mobilevision.layers.token_mixers import TOKEN_MIXERS, create_token_mixer
from mobilevision.layers.weight_init import init_weights
from mobilevision.models.checkpoint import rename_prefix
from mobilevision.models.registry import WeightSource, register_variants

NORMS = ("groupnorm1", "groupnorm1_nobias", "layernorm_nobias")
HEADS = ("norm_pool_linear", "pool_norm_linear", "pool_norm_mlp")


def make_norm(kind: str, dim: int, eps: float, channels_last: bool) -> nn.Module:
    """'groupnorm1' (PoolFormer) | 'groupnorm1_nobias' (PoolFormerV2) | 'layernorm_nobias' (ConvFormer/CAFormer)."""
    check_choice(kind, NORMS, "MetaFormer norm")
    if kind.startswith("groupnorm1"):
        return GroupNorm1(dim, eps=eps, bias=kind == "groupnorm1", channels_last=channels_last)
    return channel_layer_norm(dim, eps=eps, bias=False, channels_last=channels_last)


class MetaFormerBlock(nn.Module):
    """norm -> token mixer -> residual, norm -> MLP -> residual, with optional layer-scale and res-scale.

    Runs channels-first (B, C, H, W) or, for mixers with `channels_last` (attention), (B, H, W, C); the MLP is
    1x1 convs or Linear layers accordingly (the same maths, timm's parameter shapes).
    """

    def __init__(self, dim: int, mixer: nn.Module, norm: str = "layernorm_nobias", norm_eps: float = 1e-6,
                 mlp_ratio: float = 4.0, mlp_act: str = "star_relu", mlp_bias: bool = False,
                 drop: float = 0.0, drop_path: float = 0.0, layer_scale_init: float | None = None,
                 res_scale_init: float | None = None) -> None:
        super().__init__()
        cl = bool(getattr(mixer, "channels_last", False))
        self.channels_last = cl

        def scale(init: float | None) -> nn.Module:
            return LayerScale(dim, init, channels_last=cl) if init is not None else nn.Identity()

        self.norm1 = make_norm(norm, dim, norm_eps, cl)
        self.token_mixer = mixer
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale1 = scale(layer_scale_init)
        self.res_scale1 = scale(res_scale_init)
        self.norm2 = make_norm(norm, dim, norm_eps, cl)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), act=mlp_act, bias=mlp_bias, drop=drop, use_conv=not cl)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale2 = scale(layer_scale_init)
        self.res_scale2 = scale(res_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_scale1(x) + self.layer_scale1(self.drop_path1(self.token_mixer(self.norm1(x))))
        return self.res_scale2(x) + self.layer_scale2(self.drop_path2(self.mlp(self.norm2(x))))


class Downsampling(nn.Module):
    """conv with an optional norm, after it (the stem: 7x7 s4 p2) or with `norm_first` before it (stage
    transitions: 3x3 s2 p1)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int,
                 norm: nn.Module | None = None, norm_first: bool = False, dilation: int = 1) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation)
        self.norm = norm if norm is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x)) if self.norm_first else self.norm(self.conv(x))


class MetaFormerStage(nn.Module):
    """Downsampling (Identity in the first stage; the stem does it) then `depth` blocks; NCHW in and out."""

    def __init__(self, downsample: nn.Module, blocks: list[MetaFormerBlock]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)
        self.channels_last = blocks[0].channels_last if blocks else False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)  # (B, C, H, W)
        if self.channels_last:
            return self.blocks(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # via (B, H, W, C)
        return self.blocks(x)


def metaformer_head(kind: str, dim: int, num_classes: int, drop_rate: float, mlp_norm_eps: float) -> ClassifierHead:
    """'norm_pool_linear' (PoolFormer v1: GroupNorm on the map, mean, Linear), 'pool_norm_linear' (mean,
    LayerNorm, Linear) or 'pool_norm_mlp' (mean, LayerNorm, MlpHead). (B, C, H, W) -> (B, classes)."""
    v1 = kind == "norm_pool_linear"
    norm = GroupNorm1(dim, eps=1e-5) if v1 else nn.LayerNorm(dim, eps=1e-6)
    return ClassifierHead(dim, num_classes, drop_rate, norm=norm, norm_first=v1,
                          fc="mlp" if kind == "pool_norm_mlp" else "linear", mlp_norm_eps=mlp_norm_eps,
                          init="trunc_normal")


class MetaFormer(Classifier):
    """Four MetaFormer stages at reductions 4, 8, 16, 32 plus a classifier head.

    Args: `depths`, `dims` per stage; `token_mixers` a name or one name per stage ('identity', 'pool',
    'sepconv', 'attention', 'random'); `norm` one of NORMS; `mlp_act` 'gelu' | 'star_relu';
    `layer_scale_init` (None = off); `res_scale_init` per stage (None = off); `conv_norms` adds the bias-free
    LayerNorm after the stem conv and before each downsampling conv (MetaFormer baselines); `head` one of HEADS;
    `img_size` only sizes RandomMixing's token matrices.
    """

    def __init__(
        self,
        depths: Sequence[int] = (2, 2, 6, 2),
        dims: Sequence[int] = (64, 128, 320, 512),
        token_mixers: str | Sequence[str] = "pool",
        norm: str = "groupnorm1",
        norm_eps: float = 1e-5,
        mlp_act: str = "gelu",
        mlp_bias: bool = True,
        layer_scale_init: float | None = 1e-5,
        res_scale_init: Sequence[float | None] = (None, None, None, None),
        conv_norms: bool = False,
        head: str = "norm_pool_linear",
        head_mlp_norm_eps: float = 1e-5,
        img_size: int = 224,
        num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        check_output_stride(output_stride, "MetaFormer")
        n = len(depths)
        if len(dims) != n or n == 0:
            raise ValueError(f"depths {tuple(depths)} and dims {tuple(dims)} must be non-empty and of equal length")
        mixers = [token_mixers] * n if isinstance(token_mixers, str) else list(token_mixers)
        if len(mixers) != n:
            raise ValueError(f"token_mixers {tuple(mixers)} must name one mixer per stage ({n} stages)")
        for m in mixers:
            check_choice(m, TOKEN_MIXERS, "token mixer")
        check_choice(head, HEADS, "MetaFormer head")
        res_scale_init = list(res_scale_init)
        if len(res_scale_init) != n:
            raise ValueError(f"res_scale_init {tuple(res_scale_init)} must have one entry per stage ({n})")
        self.num_classes = num_classes
        self.num_features = dims[-1]
        self.token_mixers = tuple(mixers)

        def conv_norm(dim: int) -> nn.Module | None:
            return channel_layer_norm(dim, eps=1e-6, bias=False) if conv_norms else None

        self.stem = Downsampling(in_chans, dims[0], 7, 4, 2, norm=conv_norm(dims[0]))
        rates = drop_path_rates(drop_path_rate, depths)
        stages, self.feature_info, reduction, dilation = [], [], 4, 1
        for i in range(n):
            prev_dilation = dilation
            stride, dilation = stride_or_dilate(1 if i == 0 else 2, reduction, dilation, output_stride)
            if dilation > prev_dilation and mixers[i] in ("pool", "random"):
                # an average pool has no dilated form; the random mixer's matrix fixes the map size
                raise ValueError(f"output_stride {output_stride} is not supported by the {mixers[i]!r} token "
                                 f"mixer of stage {i}: use output_stride=32 (the four maps at strides 4..32)")
            reduction *= stride
            down = nn.Identity() if i == 0 else Downsampling(dims[i - 1], dims[i], 3, stride, prev_dilation,
                                                             norm=conv_norm(dims[i - 1]), norm_first=True,
                                                             dilation=prev_dilation)
            mixer_kwargs = {"num_tokens": (img_size // 2 ** (i + 2)) ** 2} if mixers[i] == "random" else {}
            if mixers[i] == "sepconv" and dilation > 1:
                mixer_kwargs["dilation"] = dilation
            blocks = [
                MetaFormerBlock(
                    dims[i], create_token_mixer(mixers[i], dims[i], **mixer_kwargs), norm=norm, norm_eps=norm_eps,
                    mlp_act=mlp_act, mlp_bias=mlp_bias, drop=proj_drop_rate, drop_path=rates[i][j],
                    layer_scale_init=layer_scale_init, res_scale_init=res_scale_init[i],
                )
                for j in range(depths[i])
            ]
            stages.append(MetaFormerStage(down, blocks))
            self.feature_info.append({"num_chs": dims[i], "reduction": reduction, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.head = metaformer_head(head, dims[-1], num_classes, drop_rate, head_mlp_norm_eps)
        init_weights(self, "trunc_normal")

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith(".scale")}


# ---------------------------------------------------------------------------------------------- checkpoints

def checkpoint_filter(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Our layout and timm's pass unchanged; the official sail-sg/poolformer layout is remapped.

    Official keys: `patch_embed.proj.*`, `network.{2i}.{j}.{norm1,norm2,mlp.fc1,mlp.fc2,layer_scale_1,
    layer_scale_2}`, `network.{2i+1}.proj.*` (downsampling before stage i+1), `norm.*`, `head.*`.
    """
    if "patch_embed.proj.weight" not in state_dict:
        return state_dict
    out = {}
    for k, v in state_dict.items():
        k = k.replace("patch_embed.proj.", "stem.conv.")
        m = re.match(r"network\.(\d+)\.(.*)", k)
        if m:
            idx, rest = int(m.group(1)), m.group(2)
            if idx % 2 == 1:  # downsampling PatchEmbed between stages
                k = f"stages.{idx // 2 + 1}.downsample.{rest.replace('proj.', 'conv.')}"
            else:
                rest = re.sub(r"layer_scale_(\d)$", r"layer_scale\1.scale", rest)
                k = f"stages.{idx // 2}.blocks.{rest}"
        out[rename_prefix(k, {"norm": "head.norm", "head": "head.fc"}) or k] = v
    return out


# ---------------------------------------------------------------------------------------------- variants

V1 = dict(norm="groupnorm1", norm_eps=1e-5, mlp_act="gelu", mlp_bias=True, conv_norms=False,
          res_scale_init=(None,) * 4, head="norm_pool_linear")
BASELINE = dict(mlp_act="star_relu", mlp_bias=False, layer_scale_init=None, conv_norms=True,
                res_scale_init=(None, None, 1.0, 1.0))


_S, _M = (64, 128, 320, 512), (96, 192, 384, 768)
VARIANTS = {  # name: (depths, dims, architecture, crop_pct)
    "poolformer_s12": ((2, 2, 6, 2), _S, {**V1, "layer_scale_init": 1e-5}, 0.9),
    "poolformer_s24": ((4, 4, 12, 4), _S, {**V1, "layer_scale_init": 1e-5}, 0.9),
    "poolformer_s36": ((6, 6, 18, 6), _S, {**V1, "layer_scale_init": 1e-6}, 0.9),
    "poolformer_m36": ((6, 6, 18, 6), _M, {**V1, "layer_scale_init": 1e-6}, 0.95),
    "poolformer_m48": ((8, 8, 24, 8), _M, {**V1, "layer_scale_init": 1e-6}, 0.95),
    "poolformerv2_s12": ((2, 2, 6, 2), _S, {**BASELINE, "token_mixers": "pool", "norm": "groupnorm1_nobias",
                                            "norm_eps": 1e-6, "head": "pool_norm_linear"}, 1.0),
    "convformer_s18": ((3, 3, 9, 3), _S, {**BASELINE, "token_mixers": "sepconv", "norm": "layernorm_nobias",
                                          "norm_eps": 1e-6, "head": "pool_norm_mlp", "head_mlp_norm_eps": 1e-6}, 1.0),
    "caformer_s18": ((3, 3, 9, 3), _S, {**BASELINE, "token_mixers": ("sepconv", "sepconv", "attention", "attention"),
                                        "norm": "layernorm_nobias", "norm_eps": 1e-6, "head": "pool_norm_mlp",
                                        "head_mlp_norm_eps": 1e-6}, 1.0),
}

register_variants(
    "metaformer", MetaFormer,
    {name: dict(family="poolformer" if name.startswith("poolformer_") else "metaformer",
                kwargs={"depths": depths, "dims": dims, **arch}, crop_pct=crop_pct,
                weights=WeightSource(hf_hub_id=f"timm/{name}.sail_in1k"))
     for name, (depths, dims, arch, crop_pct) in VARIANTS.items()},
    checkpoint_filter=checkpoint_filter,
)
