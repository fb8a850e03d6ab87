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
from mobilevision.models.mobilenet import modules_in_order
from mobilevision.models.registry import ModelConfig, WeightSource, register_model

from .model import Segmenter, create_segmenter


def _build(num_classes: int = 21, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
           head: str = "deeplabv3", backbone: str = "mobilenetv3_large_100", **kwargs: Any) -> Segmenter:
    if drop_rate:
        kwargs.setdefault("dropout", drop_rate)
    return create_segmenter(head, backbone, num_classes, in_chans=in_chans, drop_path_rate=drop_path_rate, **kwargs)


# --------------------------------------------------------------------------- torchvision -> ours key mapping
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
    own = model.state_dict()
    # the backbone (torchvision's MobileNetV3 `features`) matched by position, as `mobilenet.torchvision_filter` does
    theirs = modules_in_order({k.removeprefix("backbone."): v for k, v in state_dict.items()
                                if k.startswith("backbone.")}, natural=True)
    ours = modules_in_order({k: v for k, v in own.items() if k.startswith("backbone.model.")})
    if [sorted(p) for p in theirs.values()] != [sorted(p) for p in ours.values()]:
        raise ValueError(f"torchvision's backbone ({len(theirs)} layers) does not fit this segmenter's ({len(ours)}); "
                         f"it is the MobileNetV3-Large of the deeplabv3 / lraspp_mobilenetv3_large_100 presets")
    out = {f"{mod}.{leaf}": v for mod, params in zip(ours, theirs.values()) for leaf, v in params.items()}
    for k, v in state_dict.items():
        if k.startswith("backbone."):
            continue
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
