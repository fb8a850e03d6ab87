"""Registered segmentation presets (the papers' and torchvision's configurations) and torchvision key mapping.

Each preset is a `ModelConfig` in the one registry, so `create_model(name)`, `list_models("deeplabv3*")` and
`model_info(name)` know it. `create_model(preset)` defaults to the preset's class count (21, VOC).
"""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from mobilevision.data.config import IMAGENET_MEAN, IMAGENET_STD
from mobilevision.models.registry import ModelConfig, WeightSource, register_model

from .model import Segmenter, create_segmenter


def _build(num_classes: int = 21, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
           head: str = "deeplabv3", backbone: str = "mobilenetv3_large_100", **kwargs: Any) -> Segmenter:
    if drop_rate:
        kwargs.setdefault("dropout", drop_rate)
    return create_segmenter(head, backbone, num_classes, in_chans=in_chans, drop_path_rate=drop_path_rate, **kwargs)


# --------------------------------------------------------------------------- torchvision -> ours key mapping
# torchvision's MobileNetV3-Large `features.i` (i = 1..15) are our 15 bneck blocks in stage order; the
# stage sizes of MOBILENET_V3_LARGE give our (stage, block) of each; features.16 is the closing 1x1 conv.
_V3_LARGE_STAGES = (1, 2, 3, 4, 2, 3)
_V3_BLOCKS = [(s, b) for s, n in enumerate(_V3_LARGE_STAGES) for b in range(n)]
_V3_SE = {4, 5, 6, 11, 12, 13, 14, 15}  # torchvision feature indices whose block has squeeze-excite


def _tv_backbone_key(rest: str) -> str | None:
    """`backbone.<i>.<...>` tail -> our key under `backbone.model.`, None if not a backbone key."""
    m = re.match(r"(\d+)\.(.*)", rest)
    if not m:
        return None
    i, tail = int(m.group(1)), m.group(2)
    if i in (0, 16):  # stem / closing 1x1 conv: Conv2dNormActivation (0 conv, 1 BN)
        part, _, leaf = tail.partition(".")
        name = ("conv_stem", "bn1")[int(part)] if i == 0 else "blocks.6.0." + ("conv", "bn1")[int(part)]
        return f"{name}.{leaf}"
    s, b = _V3_BLOCKS[i - 1]
    m = re.match(r"block\.(\d+)\.(\w+)\.(.*)", tail)
    j, sub, leaf = int(m.group(1)), m.group(2), m.group(3)
    if i == 1:  # no expansion: dw, project
        layers = [("conv_dw", "bn1"), ("conv_pw", "bn2")]
    else:
        se = [("se.conv_reduce", "se.conv_expand")] if i in _V3_SE else []
        layers = [("conv_pw", "bn1"), ("conv_dw", "bn2")] + se + [("conv_pwl", "bn3")]
    name = layers[j][0 if sub in ("0", "fc1") else 1]  # (conv, BN) or (SE fc1, fc2)
    return f"blocks.{s}.{b}.{name}.{leaf}"


_TV_HEAD_RULES = (
    # DeepLabHead = Sequential(ASPP, conv3x3, BN, ReLU, conv1x1)
    (r"classifier\.0\.convs\.([0-3])\.0\.", r"head.aspp.branches.\1.conv."),
    (r"classifier\.0\.convs\.([0-3])\.1\.", r"head.aspp.branches.\1.bn."),
    (r"classifier\.0\.convs\.4\.1\.", "head.aspp.pool.proj.conv."),
    (r"classifier\.0\.convs\.4\.2\.", "head.aspp.pool.proj.bn."),
    (r"classifier\.0\.project\.0\.", "head.aspp.project.conv."),
    (r"classifier\.0\.project\.1\.", "head.aspp.project.bn."),
    (r"classifier\.1\.", "head.conv.conv."),
    (r"classifier\.2\.", "head.conv.bn."),
    (r"classifier\.4\.", "head.classifier."),
    (r"aux_classifier\.0\.", "aux_head.conv.conv."),
    (r"aux_classifier\.1\.", "aux_head.conv.bn."),
    (r"aux_classifier\.4\.", "aux_head.classifier."),
    # LRASPPHead
    (r"classifier\.cbr\.0\.", "head.cbr.conv."),
    (r"classifier\.cbr\.1\.", "head.cbr.bn."),
    (r"classifier\.scale\.1\.", "head.scale."),
    (r"classifier\.(low|high)_classifier\.", r"head.\1_classifier."),
)


def torchvision_filter(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """torchvision's `deeplabv3_mobilenet_v3_large` / `lraspp_mobilenet_v3_large` keys -> ours; our own layout
    passes unchanged. An aux head in the file but not in the model is dropped."""
    if "backbone.0.0.weight" not in state_dict:
        return state_dict
    own = set(model.state_dict())
    out = {}
    for k, v in state_dict.items():
        if k.startswith("backbone."):
            new = _tv_backbone_key(k[len("backbone."):])
            new = new and "backbone.model." + new
        else:
            new = next((re.sub(pat, rep, k, count=1) for pat, rep in _TV_HEAD_RULES if re.match(pat, k)), None)
        if new is None:
            raise ValueError(f"torchvision key {k!r} has no counterpart in this segmenter")
        if new.startswith("aux_head.") and new not in own:
            continue
        out[new] = v
    return out


# --------------------------------------------------------------------------------------------- the presets
_TV = dict(input_size=(3, 520, 520), mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=1.0, interpolation="bilinear")
_TV_BACKBONE = dict(bn_eps=1e-3)  # torchvision's MobileNetV3 BatchNorm
_TV_TAPS = ("blocks.2.0", "blocks.6")  # torchvision's features[4] (first stride-8 block) and features[16]
_CVNETS = dict(input_size=(3, 512, 512), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_pct=1.0,
               interpolation="bilinear")
_NO_WEIGHTS = "no trained weights ship with mobilevision; torchvision's load with checkpoint_path=FILE"

PRESETS: list[tuple[str, str, dict, dict]] = [
    ("deeplabv3_mobilenetv3_large_100", "deeplabv3",
     dict(backbone="mobilenetv3_large_100", output_stride=16, aux=True, rates=(12, 24, 36), extra_conv=True,
          dropout=0.5, taps=_TV_TAPS, backbone_overrides=_TV_BACKBONE), _TV),
    ("lraspp_mobilenetv3_large_100", "lraspp",
     dict(backbone="mobilenetv3_large_100", output_stride=16, channels=128, taps=_TV_TAPS,
          backbone_overrides=_TV_BACKBONE), _TV),
    ("deeplabv3_mobilenetv2_100", "deeplabv3",
     dict(backbone="mobilenetv2_100", output_stride=16, rates=(6, 12, 18), extra_conv=False, dropout=0.1),
     dict(_TV, input_size=(3, 512, 512))),
] + [
    (f"deeplabv3_{v}", "deeplabv3",
     dict(backbone=v, output_stride=16, rates=(6, 12, 18), extra_conv=False, dropout=0.1, drop_final_conv=True),
     _CVNETS)
    for v in ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s")
] + [
    (f"fpn_{b}", "fpn", dict(backbone=b, output_stride=32), dict(_TV, input_size=(3, 512, 512)))
    for b in ("poolformer_s12", "poolformer_s24", "poolformer_s36", "convnext_tiny", "convnextv2_atto",
              "convnextv2_nano")
]

for _name, _head, _kwargs, _data in PRESETS:
    register_model(ModelConfig(
        name=_name, family=_head, builder=_build, kwargs=dict(head=_head, **_kwargs), num_classes=21, **_data,
        weights=WeightSource(note=_NO_WEIGHTS), checkpoint_filter=torchvision_filter,
    ))
