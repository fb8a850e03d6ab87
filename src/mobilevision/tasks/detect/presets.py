"""Registered SSDLite presets (family "ssdlite"): torchvision's, the MobileViT paper's and the MobileNetV2 paper's;
and the Mobile-Former DETR presets (family "mobileformer_detr"), `mobileformer_detr_<variant>` on every
Mobile-Former (the paper's: `mobileformer_detr_508m`; COCO: 91 classes with no-object, 800 x 1333, ImageNet stats).

`create_model(name)` builds them like any zoo model (`num_classes` counts the background; default 91 for the
torchvision preset, 81 for the COCO-80 ones). `ssdlite320_mobilenetv3_large_100` loads torchvision's
`ssdlite320_mobilenet_v3_large` state dict (keys remapped by `torchvision_filter`).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mobilevision.data.config import IMAGENET_MEAN, IMAGENET_STD, DataConfig
from mobilevision.layers.conv_norm_act import ConvNormAct
from mobilevision.models.inverted_residual import DepthwiseSeparable, InvertedResidual
from mobilevision.models.registry import ModelConfig, WeightSource, register_model
from .detr import mobileformer_detr_preset
from .ssdlite import SSDLite, build_ssdlite, detection_backbone

_NO_WEIGHTS = WeightSource(note="no released COCO weights are wired in; train it or pass checkpoint_path=PATH "
                                "(torchvision's ssdlite320_mobilenet_v3_large state dict loads into "
                                "ssdlite320_mobilenetv3_large_100)")


def _check(in_chans: int) -> None:
    if in_chans != 3:
        raise ValueError(f"SSDLite presets take RGB images (in_chans=3), got in_chans={in_chans}")


def ssdlite_torchvision_mobilenetv3(num_classes: int = 91, in_chans: int = 3, drop_rate: float = 0.0,
                                    drop_path_rate: float = 0.0, reduced_tail: bool = True, **kw: Any) -> SSDLite:
    """torchvision's ssdlite320_mobilenet_v3_large: BN eps 1e-3 / momentum 0.03 throughout; the reduced tail of its
    COCO weights, or (reduced_tail=False) the full one torchvision builds to start from a pretrained classifier."""
    _check(in_chans)
    body = detection_backbone("mobilenetv3_large_100", "expansion", reduced_tail=reduced_tail, bn_eps=1e-3)
    model = build_ssdlite(body, num_classes, _cfg((0.5,) * 3, (0.5,) * 3), layout="torchvision", **kw)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.03
    return model


def ssdlite_cvnets_mobilevit(num_classes: int = 81, in_chans: int = 3, drop_rate: float = 0.0,
                             drop_path_rate: float = 0.0, variant: str = "mobilevit_s", **kw: Any) -> SSDLite:
    """ml-cvnets' SSDLite on MobileViT (paper Table 1): [0, 1] pixels, no mean/std."""
    _check(in_chans)
    body = detection_backbone(variant, "stages", drop_path_rate=drop_path_rate)
    return build_ssdlite(body, num_classes, _cfg((0.0,) * 3, (1.0,) * 3), layout="cvnets", **kw)


def ssdlite_paper_mobilenetv2(num_classes: int = 81, in_chans: int = 3, drop_rate: float = 0.0,
                              drop_path_rate: float = 0.0, **kw: Any) -> SSDLite:
    """MobileNetV2 paper 6.2: layer-15 expansion (576 ch, OS16) + last layer (1280 ch), extras 512/256/256/128,
    separable heads, TF OD API anchors (3 on the lowest map)."""
    _check(in_chans)
    body = detection_backbone("mobilenetv2_100", "expansion", drop_path_rate=drop_path_rate)
    kw.setdefault("reduced_first_anchors", True)
    return build_ssdlite(body, num_classes, _cfg(IMAGENET_MEAN, IMAGENET_STD), layout="torchvision", **kw)


def _cfg(mean, std) -> DataConfig:
    return DataConfig((3, 320, 320), tuple(mean), tuple(std), 1.0, "bilinear")


# ----------------------------------------------------------------------------------- torchvision keys
def _tv_block_keys(block: nn.Module) -> dict[str, str]:
    """Our sub-module prefix -> torchvision's (inside `features.i.`) for one block of the MobileNetV3 body."""
    if isinstance(block, ConvNormAct):
        return {"conv": "0", "bn1": "1"}
    se = not isinstance(block.se, nn.Identity)
    if isinstance(block, DepthwiseSeparable):
        last = "block.2" if se else "block.1"
        return {"conv_dw": "block.0.0", "bn1": "block.0.1", "se.conv_reduce": "block.1.fc1",
                "se.conv_expand": "block.1.fc2", "conv_pw": f"{last}.0", "bn2": f"{last}.1"}
    if isinstance(block, InvertedResidual):
        last = "block.3" if se else "block.2"
        return {"conv_pw": "block.0.0", "bn1": "block.0.1", "conv_dw": "block.1.0", "bn2": "block.1.1",
                "se.conv_reduce": "block.2.fc1", "se.conv_expand": "block.2.fc2", "conv_pwl": f"{last}.0",
                "bn3": f"{last}.1"}
    raise ValueError(f"no torchvision layout for block type {type(block).__name__}")


def torchvision_key_map(model: SSDLite) -> dict[str, str]:
    """torchvision SSDLite key -> our key, for every tensor of `model`'s state dict.

    torchvision splits its MobileNetV3 at the C4 expansion: `backbone.features.0` = features[:c4] + the
    expansion conv of features[c4]; `backbone.features.1` = the rest of features[c4] (its `block[1:]`, indices
    kept) + features[c4 + 1:]. Extras are `backbone.extra.*`; heads have our names.
    """
    blocks = [(f"blocks.{s}.{b}", blk) for s, stage in enumerate(model.backbone.model.blocks)
              for b, blk in enumerate(stage)]
    idx = {name: (j, blk) for j, (name, blk) in enumerate(blocks, 1)}  # our block -> (torchvision index, block)
    c4 = idx[model.backbone.feature_info[0]["module"].rsplit(".", 1)[0]][0]  # the tap: blocks.S.B.conv_pw
    prefix_map = {"conv_stem": "backbone.features.0.0.0", "bn1": "backbone.features.0.0.1"}
    out: dict[str, str] = {}
    for key in model.state_dict():
        if key.startswith(("extra.", "head.")):
            out[("backbone." + key) if key.startswith("extra.") else key] = key
            continue
        mod, rest = key[len("backbone.model."):].rsplit(".", 1)  # e.g. blocks.1.0.se.conv_reduce, weight
        if mod in prefix_map:
            out[f"{prefix_map[mod]}.{rest}"] = key
            continue
        _, s, b, inner = mod.split(".", 3)
        j, blk = idx[f"blocks.{s}.{b}"]
        tv = _tv_block_keys(blk).get(inner)
        if tv is None:
            raise ValueError(f"cannot place our key {key!r} in torchvision's layout")
        if j < c4:
            tv_key = f"backbone.features.0.{j}.{tv}.{rest}"
        elif j == c4:
            _, k, tail = tv.split(".", 2)
            tv_key = (f"backbone.features.0.{j}.{tail}.{rest}" if k == "0"
                      else f"backbone.features.1.0.{k}.{tail}.{rest}")
        else:
            tv_key = f"backbone.features.1.{j - c4}.{tv}.{rest}"
        out[tv_key] = key
    return out


def torchvision_filter(state_dict: dict[str, torch.Tensor], model: SSDLite) -> dict[str, torch.Tensor]:
    """Remap torchvision's `ssdlite320_mobilenet_v3_large` keys to ours; our own layout passes unchanged."""
    if not any(k.startswith("backbone.features.") for k in state_dict):
        return state_dict
    mapping = torchvision_key_map(model)
    unknown = [k for k in state_dict if k not in mapping]
    if unknown:
        raise ValueError(f"{len(unknown)} torchvision keys have no place in {type(model).__name__}, first: "
                         f"{', '.join(unknown[:3])}; is this an ssdlite320_mobilenet_v3_large state dict?")
    return {mapping[k]: v for k, v in state_dict.items()}


PRESETS = {
    "ssdlite320_mobilenetv3_large_100": (ssdlite_torchvision_mobilenetv3, {}, (0.5,) * 3, (0.5,) * 3,
                                         torchvision_filter),
    "ssdlite_mobilevit_xxs": (ssdlite_cvnets_mobilevit, {"variant": "mobilevit_xxs"}, (0.0,) * 3, (1.0,) * 3, None),
    "ssdlite_mobilevit_xs": (ssdlite_cvnets_mobilevit, {"variant": "mobilevit_xs"}, (0.0,) * 3, (1.0,) * 3, None),
    "ssdlite_mobilevit_s": (ssdlite_cvnets_mobilevit, {"variant": "mobilevit_s"}, (0.0,) * 3, (1.0,) * 3, None),
    "ssdlite_mobilenetv2_100": (ssdlite_paper_mobilenetv2, {}, IMAGENET_MEAN, IMAGENET_STD, None),
}
DEFAULT_NUM_CLASSES = {"ssdlite320_mobilenetv3_large_100": 91}

for _name, (_builder, _kwargs, _mean, _std, _filter) in PRESETS.items():
    register_model(ModelConfig(
        _name, "ssdlite", _builder, kwargs=_kwargs, num_classes=DEFAULT_NUM_CLASSES.get(_name, 81),
        input_size=(3, 320, 320), mean=_mean, std=_std, crop_pct=1.0, interpolation="bilinear",
        weights=_NO_WEIGHTS, checkpoint_filter=_filter,
    ))


_DETR_WEIGHTS = WeightSource(note="the Mobile-Former paper's DETR weights were never released; train it or pass "
                                  "checkpoint_path=PATH")
for _variant in ("508m", "294m", "214m", "151m", "96m", "52m", "26m"):
    register_model(ModelConfig(
        f"mobileformer_detr_{_variant}", "mobileformer_detr", mobileformer_detr_preset,
        kwargs={"backbone": f"mobileformer_{_variant}"}, num_classes=91, input_size=(3, 800, 1333),
        mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=1.0, interpolation="bilinear", weights=_DETR_WEIGHTS,
    ))
