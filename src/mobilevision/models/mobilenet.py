"""MobileNetV1, V2 and V3 (incl. the "minimalistic" V3), and the model class the whole
inverted-residual family shares (EfficientNet and MoGA build on it too).

Layout is timm's: `conv_stem`, `bn1`, `blocks.<stage>.<block>...`, `conv_head`, `bn2` (V1/V2), `classifier`,
so timm checkpoints of the same name load as they are.

torchvision's form is a set of options of the same models, not another layout: its `mobilenet_v2` state dict
loads into `mobilenetv2_100` as it is; its MobileNetV3s need `bn_eps=1e-3` (torchvision's BatchNorm eps), and
`reduced_tail=True` / `dilated=True` are its `_mobilenet_v3_conf` options, e.g.
`create_model("mobilenetv3_large_100", bn_eps=1e-3, reduced_tail=True, checkpoint_path="tv.pth")`.
`torchvision_filter` detects torchvision's keys (`features.N...`, `classifier.N`) and maps them by position;
its Linear(960, 1280) head is our 1x1 `conv_head` with bias, its SE the same hard-sigmoid SE.

Papers: MobileNets (arXiv 1704.04861) Table 1, MobileNetV2 (arXiv 1801.04381) Table 2,
Searching for MobileNetV3 (arXiv 1905.02244) Tables 1-2, TF slim `mobilenet_v3.py` for the minimalistic
variants.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mobilevision.models.features import Classifier
from mobilevision.layers.activations import create_act
from mobilevision.layers.helpers import check_choice, make_divisible
from mobilevision.layers.weight_init import init_weights
from mobilevision.models.inverted_residual import BlockSpec, SERule, build_stages
from mobilevision.models.registry import INCEPTION_MEAN, INCEPTION_STD, WeightSource, register_variants

HEAD_KINDS = ("none", "pre_pool", "post_pool")


@dataclass(frozen=True)
class HeadSpec:
    """The layers between the last stage and the classifier.

    "none": pool -> classifier (MobileNetV1). "pre_pool": conv 1x1 -> BN -> act -> pool -> classifier
    (V2, EfficientNet; `conv_head`, `bn2`). "post_pool": pool -> conv 1x1 -> act -> classifier,
    MobileNetV3's "efficient last stage" (also MoGA, whose head conv has no bias). `bias`: the head conv's.
    """

    kind: str = "pre_pool"
    width: int = 1280
    bias: bool = False

    def __post_init__(self) -> None:
        check_choice(self.kind, HEAD_KINDS, "HeadSpec kind")


class MobileNet(Classifier):
    """Stem conv 3x3/2 -> stages of BlockSpec blocks -> head -> dropout -> Linear.

    Input (B, in_chans, H, W); `forward_stages` gives the maps listed in `feature_info` (reductions 2..32);
    `forward_features` gives (B, C, H/32, W/32) (after the head conv for "pre_pool" heads); pooled features
    have `num_features` channels. `output_stride`, `dilate_first` and `feature_location` are those of
    `build_stages` (dense-prediction backbones: dilation instead of the last strides, SSDLite expansion taps).
    """

    def __init__(
        self,
        stages: Sequence[Sequence[BlockSpec]],
        *,
        stem_chs: int,
        head: HeadSpec,
        act: str,
        se_rule: SERule = SERule(),
        hidden_divisor: int = 8,
        num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
        bn_eps: float = 1e-5,
        output_stride: int = 32,
        dilate_first: bool = False,
        feature_location: str = "",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.head_kind = head.kind
        self.conv_stem = nn.Conv2d(in_chans, stem_chs, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_chs, eps=bn_eps)
        self.act1 = create_act(act)
        self.blocks, self.feature_info, chs = build_stages(
            stages, stem_chs, act=act, se_rule=se_rule, hidden_divisor=hidden_divisor,
            drop_path_rate=drop_path_rate, bn_eps=bn_eps, output_stride=output_stride, dilate_first=dilate_first,
            feature_location=feature_location,
        )
        if feature_location == "expansion" and not any(f["module"].endswith("conv_pw") for f in self.feature_info):
            raise ValueError("feature_location='expansion' needs inverted-residual blocks; this model has none "
                             "(MobileNetV1): use feature_location=''")
        taps = [f["module"].split(".") for f in self.feature_info if f["module"].startswith("blocks.")]
        self._feature_stages = {int(t[1]) for t in taps if len(t) == 2}
        self._expansion_stages = {int(t[1]) for t in taps if len(t) > 2}
        self._stem_feature = any(f["module"] == "bn1" for f in self.feature_info)
        self.num_features = chs if head.kind == "none" else head.width
        if head.kind == "none":
            self.conv_head, self.bn2, self.act2 = nn.Identity(), nn.Identity(), nn.Identity()
        else:
            self.conv_head = nn.Conv2d(chs, head.width, 1, bias=head.bias)
            if head.kind == "pre_pool":
                self.bn2 = nn.BatchNorm2d(head.width, eps=bn_eps)
            self.act2 = create_act(act)
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self, "tf_mobilenet")

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv_stem(x)))  # (B, stem_chs, H/2, W/2)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.forward_stem(x)
        maps = [x] if self._stem_feature else []
        for i, stage in enumerate(self.blocks):
            if i in self._expansion_stages:  # tap the first block's expansion, then finish the stage
                expanded = stage[0].expand(x)
                maps.append(expanded)
                x = stage[1:](stage[0](x, expanded))
            else:
                x = stage(x)
            if i in self._feature_stages:
                maps.append(x)
        return maps

    def forward_head_conv(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-pool head conv: (B, C_last, h, w) -> (B, head_width, h, w); other head kinds pass x."""
        if self.head_kind == "pre_pool":
            x = self.act2(self.bn2(self.conv_head(x)))
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head_conv(self.blocks(self.forward_stem(x)))  # (B, C, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))  # (B, C)
        if self.head_kind == "post_pool":
            # the 1x1 conv on the pooled map, run as the Linear it is: exported graphs then need no reshape by
            # the batch after it (litert-torch cannot lower one with a dynamic batch)
            x = self.act2(F.linear(x, self.conv_head.weight.flatten(1), self.conv_head.bias))  # (B, head_width)
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.classifier(x)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = pooled features), got {num_classes}")
        self.num_classes = num_classes
        dev = next(self.parameters()).device
        self.classifier = nn.Linear(self.num_features, num_classes, device=dev) if num_classes else nn.Identity()


def scale_stages(stages: Sequence[Sequence[BlockSpec]], width: float) -> list[list[BlockSpec]]:
    """Every block's output width times `width`, rounded with make_divisible(., 8)."""
    return [[dataclasses.replace(b, out_chs=make_divisible(b.out_chs * width)) for b in stage] for stage in stages]


# ---------------------------------------------------------------------------------------------------
# MobileNetV1: paper Table 1, 13 depthwise-separable units (dw 3x3 -> BN -> ReLU6 -> pw -> BN -> ReLU6).
# (stride, out channels) per unit, grouped into the five resolution stages.
MOBILENET_V1_TABLE: tuple[tuple[tuple[int, int], ...], ...] = (
    ((1, 64),),
    ((2, 128), (1, 128)),
    ((2, 256), (1, 256)),
    ((2, 512), (1, 512), (1, 512), (1, 512), (1, 512), (1, 512)),
    ((2, 1024), (1, 1024)),  # the paper's "s2" on the last unit is an erratum; the code uses 1
)


def mobilenet_v1(*, width: float = 1.0, **kwargs) -> MobileNet:
    """MobileNetV1 at width multiplier `width`; no head conv, classifier on 1024*width channels."""
    stages = [[BlockSpec("ds", 3, s, c, pw_act=True, skip=False) for s, c in stage] for stage in MOBILENET_V1_TABLE]
    return MobileNet(scale_stages(stages, width), stem_chs=make_divisible(32 * width), head=HeadSpec("none", 0),
                     act="relu6", **kwargs)


# MobileNetV2: paper Table 2, rows (t expansion, c out channels, n repeats, s stride); one stage per row.
MOBILENET_V2_TABLE: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),  # t=1: no expansion conv, i.e. a depthwise-separable block
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def mobilenet_v2(*, width: float = 1.0, **kwargs) -> MobileNet:
    """MobileNetV2 at width multiplier `width`; the 1280 head is never narrowed (paper section 6.1)."""
    stages = [[BlockSpec("ds" if t == 1 else "ir", 3, s, c, exp=t, repeats=n)] for t, c, n, s in MOBILENET_V2_TABLE]
    head = HeadSpec("pre_pool", max(1280, make_divisible(1280 * width)))
    return MobileNet(scale_stages(stages, width), stem_chs=make_divisible(32 * width), head=head, act="relu6",
                     **kwargs)


# MobileNetV3: paper Tables 1 (Large) and 2 (Small), rows (kernel, exp size, out, SE, NL, stride), grouped
# into timm's stages. "RE" ReLU, "HS" h-swish. A row whose exp size equals its input has no expansion conv.
@dataclass(frozen=True)
class Bneck:
    k: int
    exp: int
    out: int
    se: bool
    nl: str
    s: int


_RE, _HS = "relu", "hard_swish"
MOBILENET_V3_LARGE: tuple[tuple[Bneck, ...], ...] = (
    (Bneck(3, 16, 16, False, _RE, 1),),
    (Bneck(3, 64, 24, False, _RE, 2), Bneck(3, 72, 24, False, _RE, 1)),
    (Bneck(5, 72, 40, True, _RE, 2), Bneck(5, 120, 40, True, _RE, 1), Bneck(5, 120, 40, True, _RE, 1)),
    (Bneck(3, 240, 80, False, _HS, 2), Bneck(3, 200, 80, False, _HS, 1), Bneck(3, 184, 80, False, _HS, 1),
     Bneck(3, 184, 80, False, _HS, 1)),
    (Bneck(3, 480, 112, True, _HS, 1), Bneck(3, 672, 112, True, _HS, 1)),
    (Bneck(5, 672, 160, True, _HS, 2), Bneck(5, 960, 160, True, _HS, 1), Bneck(5, 960, 160, True, _HS, 1)),
)
MOBILENET_V3_SMALL: tuple[tuple[Bneck, ...], ...] = (
    (Bneck(3, 16, 16, True, _RE, 2),),
    (Bneck(3, 72, 24, False, _RE, 2), Bneck(3, 88, 24, False, _RE, 1)),
    (Bneck(5, 96, 40, True, _HS, 2), Bneck(5, 240, 40, True, _HS, 1), Bneck(5, 240, 40, True, _HS, 1)),
    (Bneck(5, 120, 48, True, _HS, 1), Bneck(5, 144, 48, True, _HS, 1)),
    (Bneck(5, 288, 96, True, _HS, 2), Bneck(5, 576, 96, True, _HS, 1), Bneck(5, 576, 96, True, _HS, 1)),
)
# (stem, last 1x1 conv, head conv after pooling) at width 1.0; the head is never scaled.
MOBILENET_V3_ENDS = {"large": (16, 960, 1280), "small": (16, 576, 1024)}


def _bneck_specs(table: Sequence[Sequence[Bneck]], stem: int, minimal: bool) -> list[list[BlockSpec]]:
    """Paper rows -> BlockSpecs; exp sizes become ratios of the row's input width so they scale.

    Minimalistic: every kernel 3x3, no SE, ReLU everywhere.
    """
    stages, in_chs = [], stem
    for stage in table:
        specs = []
        for r in stage:
            kind = "ds" if r.exp == in_chs else "ir"
            specs.append(BlockSpec(kind, 3 if minimal else r.k, r.s, r.out, exp=r.exp / in_chs,
                                   act="relu" if minimal else r.nl, se=0.0 if minimal or not r.se else 0.25))
            in_chs = r.out
        stages.append(specs)
    return stages


def _reduce_tail(table: Sequence[Sequence[Bneck]]) -> tuple[tuple[Bneck, ...], ...]:
    """MobileNetV3 paper Table 6 dagger (torchvision `reduced_tail`): the last stage's widths halved (the
    expansion of its first block, which reads the previous stage, is kept)."""
    last = tuple(dataclasses.replace(r, out=r.out // 2, exp=r.exp if i == 0 else r.exp // 2)
                 for i, r in enumerate(table[-1]))
    return tuple(table[:-1]) + (last,)


def mobilenet_v3(*, size: str = "large", width: float = 1.0, minimal: bool = False, reduced_tail: bool = False,
                 dilated: bool = False, **kwargs) -> MobileNet:
    """MobileNetV3-Large/Small; SE make_divisible(hidden/4, 8) with ReLU and h-sigmoid; head unscaled.

    torchvision's options (`_mobilenet_v3_conf`): `reduced_tail` halves the last stage, the last 1x1 conv and
    the head (detection backbones); `dilated` = output stride 16 with every block of the last stage dilated
    (torchvision's segmentation backbones). torchvision's own MobileNetV3 also uses BatchNorm eps 1e-3: pass
    `bn_eps=1e-3` to load its state dicts (`torchvision_filter` checks it).
    """
    check_choice(size, sorted(MOBILENET_V3_ENDS), "MobileNetV3 size")
    stem, last, head = MOBILENET_V3_ENDS[size]
    table = MOBILENET_V3_LARGE if size == "large" else MOBILENET_V3_SMALL
    if reduced_tail:
        table, last, head = _reduce_tail(table), last // 2, head // 2
    if dilated:
        if kwargs.get("output_stride", 16) != 16:
            raise ValueError(f"dilated=True is output stride 16; got output_stride={kwargs['output_stride']}")
        kwargs.update(output_stride=16, dilate_first=True)
    act = "relu" if minimal else "hard_swish"
    stages = _bneck_specs(table, stem, minimal) + [[BlockSpec("cn", 1, 1, last)]]
    stem_chs = stem if width < 0.75 else make_divisible(stem * width)  # timm keeps the stem below 0.75
    return MobileNet(scale_stages(stages, width), stem_chs=stem_chs, head=HeadSpec("post_pool", head, bias=True),
                     act=act, se_rule=SERule("divisible", act="relu", gate="hard_sigmoid"), **kwargs)


def modules_in_order(state_dict: dict[str, torch.Tensor], natural: bool = False
                     ) -> dict[str, dict[str, torch.Tensor]]:
    """{module path: {parameter / buffer name: tensor}} in the state dict's order, or with `natural` in
    torchvision's registration order (`features` by index, then `classifier`), whatever order a file kept.
    Matches torchvision's MobileNet layers to ours by position (classifiers here, segmenter backbones too)."""
    def order(key: str) -> tuple:
        return (key.startswith("classifier."),) + tuple((0, int(p)) if p.isdigit() else (1, p) for p in key.split("."))

    out: dict[str, dict[str, torch.Tensor]] = {}
    for key in sorted(state_dict, key=order) if natural else state_dict:
        module, _, leaf = key.rpartition(".")
        out.setdefault(module, {})[leaf] = state_dict[key]
    return out


def torchvision_filter(state_dict: dict[str, torch.Tensor], model: MobileNet) -> dict[str, torch.Tensor]:
    """Map torchvision's `mobilenet_v2` / `mobilenet_v3_*` layout onto ours; timm's and ours pass unchanged.

    torchvision registers the same layers in the same order (`features.0` = stem conv + BN, `features.i.conv`
    or `.block` = one block, the last 1x1 conv, then `classifier`), so modules are matched by position, each
    with the same parameter names and sizes; its MobileNetV3 head Linear(960, 1280) becomes our 1x1
    `conv_head`. torchvision's MobileNetV3 uses BatchNorm eps 1e-3: the model must be built with bn_eps=1e-3.
    """
    if "features.0.0.weight" not in state_dict or not any(k.startswith("classifier.") for k in state_dict):
        return state_dict
    if model.head_kind == "post_pool":
        eps = {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
        if eps != {1e-3}:
            raise ValueError(f"torchvision's MobileNetV3 uses BatchNorm eps 1e-3, this model {sorted(eps)}: build it "
                             f"with create_model({getattr(model, 'model_name', 'mobilenetv3_large_100')!r}, "
                             f"bn_eps=1e-3, checkpoint_path=...)")
    theirs, ours = modules_in_order(state_dict, natural=True), modules_in_order(model.state_dict())
    if len(theirs) != len(ours):
        raise ValueError(f"torchvision checkpoint has {len(theirs)} layers, this model {len(ours)}: check the "
                         f"variant, num_classes and reduced_tail")
    out = {}
    for (their_mod, their_p), (our_mod, our_p) in zip(theirs.items(), ours.items()):
        if set(their_p) != set(our_p) or any(v.numel() != our_p[k].numel() for k, v in their_p.items()):
            raise ValueError(f"torchvision layer {their_mod} {[tuple(v.shape) for v in their_p.values()]} does not "
                             f"fit {our_mod} {[tuple(v.shape) for v in our_p.values()]}")
        out.update({f"{our_mod}.{k}": v.reshape(our_p[k].shape) for k, v in their_p.items()})
    return out


_NO_V1 = "timm publishes MobileNetV1 weights only at width 1.0 (mobilenetv1_100)"
_MINIMAL = ("the published minimalistic weights are TF ports (timm tf_mobilenetv3_*_minimal_100) with TF 'same' "
            "padding and BN eps 1e-3; they do not fit this PyTorch-padded model")


def _variants(rows: Sequence[tuple], no_weights: str | None = None) -> dict[str, dict]:
    """(name, builder kwargs, timm's default weights tag or None[, other ModelConfig fields]) -> registry rows."""
    out = {}
    for name, kwargs, tag, *fields in rows:
        note = no_weights or f"timm registers {name} without trained weights"
        weights = WeightSource(hf_hub_id=f"timm/{name}.{tag}") if tag else WeightSource(note=note)
        out[name] = dict(kwargs=kwargs, weights=weights, **(fields[0] if fields else {}))
    return out


# timm's layout is ours, so timm checkpoints need no filter; torchvision's V2 / V3 are matched by position.
register_variants("mobilenetv1", mobilenet_v1, _variants(
    [(f"mobilenetv1_{w}", dict(width=int(w) / 100), "ra4_e3600_r224_in1k" if w == "100" else None)
     for w in ("100", "075", "050", "025")], no_weights=_NO_V1), mean=INCEPTION_MEAN, std=INCEPTION_STD)
register_variants("mobilenetv2", mobilenet_v2, _variants([
    ("mobilenetv2_140", dict(width=1.4), "ra_in1k"),
    ("mobilenetv2_100", dict(width=1.0), "ra_in1k"),
    ("mobilenetv2_075", dict(width=0.75), None),
    ("mobilenetv2_050", dict(width=0.5), "lamb_in1k"),
    ("mobilenetv2_035", dict(width=0.35), None),
]), checkpoint_filter=torchvision_filter)
register_variants("mobilenetv3", mobilenet_v3, {**_variants([
    ("mobilenetv3_large_100", dict(size="large", width=1.0), "ra_in1k"),
    ("mobilenetv3_large_075", dict(size="large", width=0.75), None, dict(interpolation="bilinear")),
    ("mobilenetv3_small_100", dict(size="small", width=1.0), "lamb_in1k"),
    ("mobilenetv3_small_075", dict(size="small", width=0.75), "lamb_in1k"),
]), **_variants([
    ("mobilenetv3_large_minimal_100", dict(size="large", width=1.0, minimal=True), None),
    ("mobilenetv3_small_minimal_100", dict(size="small", width=1.0, minimal=True), None),
], no_weights=_MINIMAL)}, checkpoint_filter=torchvision_filter)
