"""`Segmenter` (backbone + head + optional aux head) and `create_segmenter`, the any-backbone builder."""
from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mobilevision.data.config import resolve_data_config
from mobilevision.layers.helpers import capturing_graph, check_choice
from mobilevision.layers.norms import GroupNorm1, LayerNorm2d
from mobilevision.models.factory import create_model
from mobilevision.models.features import CarriesDataConfig, FeatureExtractor
from mobilevision.models.inverted_residual import FAMILIES as _IR_FAMILIES
from mobilevision.models.registry import get_config

from .heads import DeepLabV3Head, FCNHead, LRASPPHead, SemanticFPNHead

HEADS = ("deeplabv3", "lraspp", "fpn")
_DEFAULT_OS = {"deeplabv3": 16, "lraspp": 16, "fpn": 32}
# the norm on each map that the PoolFormer / ConvNeXt dense-prediction backbones add before their FPN necks
_OUTPUT_NORMS = {"poolformer": GroupNorm1, "metaformer": GroupNorm1,
                 "convnext": partial(LayerNorm2d, eps=1e-6), "convnextv2": partial(LayerNorm2d, eps=1e-6)}


class Segmenter(CarriesDataConfig, nn.Module):
    """Backbone maps -> head -> logits bilinearly upsampled to the input size (torchvision's segmenters).

    forward(x: (B, C, H, W) normalised like the backbone's classifier) -> {"out": (B, num_classes, H, W)}, plus
    "aux" (same shape) from the auxiliary head when there is one and the model is training or `aux=True`;
    `aux_index` picks the backbone map the aux head reads.

    Inference on the CPU (no grad, NCHW input) computes in channels_last memory and hands back NCHW logits, so
    oneDNN skips the reorder to and from its blocked layout at every convolution. Training, other devices and
    graph capture keep the input's layout, and so does `channels_last_inference = False`.
    """

    channels_last_inference = True

    def __init__(self, backbone: FeatureExtractor, head: nn.Module, num_classes: int, *,
                 aux_head: nn.Module | None = None, aux_index: int | None = None, config: dict | None = None) -> None:
        super().__init__()
        self.backbone, self.head, self.aux_head, self.aux_index = backbone, head, aux_head, aux_index
        self.num_classes = num_classes
        self.segmenter_config = dict(config or {})
        self.data_config = resolve_data_config(backbone)

    def forward(self, x: torch.Tensor, aux: bool | None = None) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        nhwc = (self.channels_last_inference and not torch.is_grad_enabled() and x.device.type == "cpu"
                and x.dim() == 4 and x.is_contiguous() and not capturing_graph(x))
        if nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
        maps = self.backbone(x)
        out = {"out": F.interpolate(self.head(maps), size=size, mode="bilinear", align_corners=False)}
        if (self.training if aux is None else aux) and self.aux_head is not None:
            a = self.aux_head(maps[self.aux_index])
            out["aux"] = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
        return {k: v.contiguous() for k, v in out.items()} if nhwc else out

    def no_weight_decay(self) -> set[str]:
        fn = getattr(self.backbone.model, "no_weight_decay", None)
        return {f"backbone.model.{n}" for n in fn()} if fn is not None else set()


def create_segmenter(
    head: str,
    backbone: str,
    num_classes: int = 21,
    *,
    output_stride: int | None = None,
    aux: bool = False,
    in_chans: int | None = None,
    drop_path_rate: float = 0.0,
    channels: int | None = None,
    rates: Sequence[int] | None = None,
    dropout: float | None = None,
    extra_conv: bool | None = None,
    drop_final_conv: bool | None = None,
    low_index: int | None = None,
    taps: Sequence[str] | None = None,
    backbone_overrides: dict | None = None,
    **unknown: Any,
) -> Segmenter:
    """A segmenter with `head` ('deeplabv3' | 'lraspp' | 'fpn') on any registered `backbone`.

    output_stride: 8 / 16 / 32 (default 16 for deeplabv3 and lraspp, 32 for fpn), given to create_model; the
    inverted-residual families also dilate the formerly strided block (torchvision's `dilated=True` rule),
    the others follow their own (MobileViT: cvnets'). aux: an FCN auxiliary head on the stride-8 map
    (torchvision's DeepLabv3). channels: ASPP width (256) / LR-ASPP inter channels (128) / FPN width (256).
    rates: ASPP dilation rates ((12, 24, 36) torchvision; (6, 12, 18) the MobileViT paper). dropout: after the
    ASPP projection (0.5) or before the FPN classifier (0.1). extra_conv: DeepLabv3's 3x3 conv after ASPP
    (torchvision: yes; ml-cvnets and the MobileNetV2 paper: no). drop_final_conv: run ASPP on the last stage's
    output rather than a final 1x1 expansion (MobileViT). low_index: the stride-8 map for LR-ASPP / aux
    (default: the map with reduction 8). taps: read the maps after these blocks instead of at stage ends
    (inverted-residual backbones; torchvision's MobileNetV3 segmenters use ('blocks.2.0', 'blocks.6')).
    backbone_overrides: passed to create_model (e.g. bn_eps=1e-3). Input: normalised images (the backbone's
    `data_config`).
    """
    if unknown:
        raise ValueError(f"create_segmenter got unknown argument(s) {sorted(unknown)}")
    check_choice(head, HEADS, "segmentation head")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1 (background counts as a class), got {num_classes}")
    cfg = get_config(backbone)
    os_ = _DEFAULT_OS[head] if output_stride is None else int(output_stride)
    if drop_final_conv is None:
        drop_final_conv = cfg.family == "mobilevit"
    overrides = dict(backbone_overrides or {})
    if cfg.family in _IR_FAMILIES and os_ != 32:
        # the formerly strided block is dilated too: torchvision's MobileNetV3 `dilated=True` rule
        overrides.setdefault("dilate_first", True)
    feats = create_model(backbone, num_classes=0, features_only=True, output_stride=os_, out_modules=taps,
                         in_chans=in_chans, drop_path_rate=drop_path_rate, **overrides)
    if drop_final_conv and not taps and hasattr(feats.model, "final_conv"):  # maps at the stages' ends
        feats = FeatureExtractor(feats.model, out_modules=[f"stages.{i}" for i in range(len(feats.model.stages))])
    chs = [f["num_chs"] for f in feats.feature_info]
    reds = [f["reduction"] for f in feats.feature_info]
    if low_index is None:
        if 8 not in reds:
            raise ValueError(f"backbone {backbone} has no stride-8 map (reductions {reds}); pass low_index=")
        low_index = reds.index(8)
    config = dict(head=head, backbone=backbone, num_classes=num_classes, output_stride=os_, aux=aux,
                  in_chans=in_chans, channels=channels, rates=list(rates) if rates else None, dropout=dropout,
                  extra_conv=extra_conv, drop_final_conv=drop_final_conv, low_index=low_index,
                  taps=list(taps) if taps else None, backbone_overrides=backbone_overrides)
    if aux and head != "deeplabv3":
        raise ValueError(f"the {head} head has no auxiliary head; drop aux=True")
    if head == "deeplabv3":
        mod = DeepLabV3Head(chs[-1], num_classes, tuple(rates or (12, 24, 36)), channels or 256,
                            0.5 if dropout is None else dropout, True if extra_conv is None else extra_conv)
    elif head == "lraspp":
        mod = LRASPPHead(chs[low_index], chs[-1], num_classes, channels or 128)
    else:
        keep = [i for i, r in enumerate(reds) if r >= 4]
        if len(keep) < 2:
            raise ValueError(f"the fpn head needs >= 2 maps at reductions >= 4; {backbone} has {reds}")
        feats.select(keep)
        mod = SemanticFPNHead([chs[i] for i in keep], [reds[i] for i in keep], num_classes, channels or 256,
                              dropout=0.1 if dropout is None else dropout)
        if cfg.family in _OUTPUT_NORMS:
            feats.__class__ = NormedFeatures
            feats.out_norms = nn.ModuleList([_OUTPUT_NORMS[cfg.family](f["num_chs"]) for f in feats.feature_info])
    if head != "fpn":
        feats.select([low_index, -1])
    aux_head = FCNHead(chs[low_index], num_classes) if aux else None
    model = Segmenter(feats, mod, num_classes, aux_head=aux_head, aux_index=0 if aux else None, config=config)
    # the finest map the logits come from (then upsampled bilinearly to the input)
    model.logit_stride = reds[keep[0]] if head == "fpn" else reds[low_index] if head == "lraspp" else reds[-1]
    from .presets import torchvision_filter  # noqa: PLC0415  (presets imports this module)

    model.checkpoint_filter = torchvision_filter  # passes our own layout through unchanged
    return model


class NormedFeatures(FeatureExtractor):
    """A FeatureExtractor whose maps each pass one norm of `out_norms` (see `_OUTPUT_NORMS`)."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [norm(m) for norm, m in zip(self.out_norms, super().forward(x))]


class LogitsOnly(nn.Module):
    """`segmenter(x)["out"]` as a plain tensor-out module, for exporters that want one output:
    (B, C, H, W) -> (B, num_classes, H, W)."""

    def __init__(self, segmenter: Segmenter) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.num_classes = segmenter.num_classes
        self.data_config = segmenter.data_config
        self.model_name = getattr(segmenter, "model_name", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmenter(x, aux=False)["out"]
