"""SSDLite on any registered backbone, with torchvision's and ml-cvnets' (MobileViT paper) layouts.

The SSD machinery is torchvision's: `DefaultBoxGenerator` anchors, `BoxCoder` (weights 10, 10, 5, 5),
`SSDMatcher`, `batched_nms`, `box_iou`. What is ours: the backbone taps (any zoo model), the extra layers and
heads of the two layouts, the loss (Smooth-L1 + cross-entropy with 3:1 hard-negative mining, normalised by
the number of positives, as torchvision's SSD) and the vectorised post-processing.

Conventions (torchvision's): the detector takes float images in [0, 1], (B, 3, H, W), and normalises inside
with its `data_config` mean / std. Class 0 is background, so `num_classes` counts it (COCO: 91 or 81).
Anchors are built for the actual feature-map sizes, so any input size works; boxes are xyxy in input pixels.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image

from mobilevision.data.config import DataConfig, resolve_data_config
from mobilevision.layers.helpers import check_choice
from mobilevision.models.factory import create_model
from mobilevision.models.features import CarriesDataConfig, FeatureExtractor
from mobilevision.models.inverted_residual import FAMILIES as _EXPANSION_FAMILIES
from mobilevision.models.registry import get_config

LAYOUTS = ("torchvision", "cvnets")
BACKBONE_KINDS = ("expansion", "stages", "last2")


def default_kind(name: str) -> str:
    """The feature location SSDLite uses on backbone `name` by default (see `detection_backbone`)."""
    family = get_config(name).family
    return "expansion" if family in _EXPANSION_FAMILIES else "stages" if family == "mobilevit" else "last2"


def detection_backbone(name: str, kind: str | None = None, **kwargs: Any) -> FeatureExtractor:
    """Registered classifier `name` as SSDLite's two maps: (B, 3, H, W) normalised -> [C4 (B, c4, H/16, W/16),
    C5 (B, c5, H/32, W/32)].

    kind "expansion" (inverted-residual families, MobileNetV2/V3 papers 6.x): C4 = the 1x1 expansion output of
    the first stride-32 block, C5 = the last map before pooling (after MobileNetV2's pre-pool 1280 conv: that
    paper attaches SSDLite to the last layer). "stages" (MobileViT in cvnets' SSD): the last two stages' outputs
    (the final 1x1 expansion conv dropped). "last2": the last two `feature_info` maps. None: `default_kind`.
    `kwargs` go to `create_model`.
    """
    kind = kind or default_kind(name)
    check_choice(kind, BACKBONE_KINDS, "backbone kind")
    family = get_config(name).family
    kwargs = dict(num_classes=0, features_only=True, **kwargs)
    if kind == "expansion":
        if family not in _EXPANSION_FAMILIES:
            raise ValueError(f"feature_location='expansion' needs an inverted-residual backbone, got {name}")
        # MobileNetV1 has no expansion convs: its C4 is the input of the stride-32 block
        fx = create_model(name, feature_location="" if family == "mobilenetv1" else "expansion",
                          out_indices=(-2, -1), head_conv=True, **kwargs)
    elif kind == "stages":
        fx = create_model(name, out_modules=("stages.-2", "stages.-1"), **kwargs)
    else:
        fx = create_model(name, out_indices=(-2, -1), **kwargs)
    if fx.reductions() != [16, 32]:
        raise ValueError(f"SSDLite needs an OS16 and an OS32 map; the maps SSDLite would read from {name} have "
                         f"reductions {fx.reductions()}")
    return fx


def _cna(in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: str | None = "relu6",
         bn_eps: float = 1e-3, bn_momentum: float = 0.03) -> nn.Sequential:
    """conv (no bias) -> BN -> act as an indexed Sequential (`0`, `1`, `2`: torchvision's key names)."""
    acts = {"relu6": nn.ReLU6, "relu": nn.ReLU, None: None}
    if act not in acts:
        raise ValueError(f"SSDLite neck activation must be 'relu6', 'relu' or None, got {act!r}")
    layers = [nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_chs, eps=bn_eps, momentum=bn_momentum)]
    return nn.Sequential(*layers, *([acts[act](inplace=True)] if act else []))


# --------------------------------------------------------------------------------------------- layers
def torchvision_extra(in_chs: int, out_chs: int, act: str, bn_eps: float) -> nn.Sequential:
    """1x1 -> out/2, dw 3x3 stride 2, 1x1 -> out, each + BN + act: (B, in, H, W) -> (B, out, H/2, W/2)."""
    mid = out_chs // 2
    return nn.Sequential(_cna(in_chs, mid, 1, act=act, bn_eps=bn_eps), _cna(mid, mid, 3, 2, mid, act, bn_eps),
                         _cna(mid, out_chs, 1, act=act, bn_eps=bn_eps))


class SeparableConv(nn.Sequential):
    """cvnets' SeparableConv2d: dw kxk + BN (no act), then 1x1 (+ BN + act, or with bias for predictions)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, act: str | None = "relu", norm: bool = True,
                 bn_eps: float = 1e-5) -> None:
        pw = (_cna(in_chs, out_chs, 1, act=act, bn_eps=bn_eps, bn_momentum=0.1) if norm
              else nn.Conv2d(in_chs, out_chs, 1))
        super().__init__(_cna(in_chs, in_chs, 3, stride, in_chs, None, bn_eps, 0.1), pw)


class SSDLiteHeads(nn.Module):
    """torchvision's SSDLite head: per map, separately for classes and boxes, dw 3x3 + BN + ReLU6 -> 1x1 (bias).

    `classification_head.module_list.i`, `regression_head.module_list.i` (torchvision's key names).
    maps: list of (B, C_i, H_i, W_i) -> (B, A_total, num_classes) logits and (B, A_total, 4) box codes.
    """

    def __init__(self, channels: Sequence[int], anchors: Sequence[int], num_classes: int, act: str = "relu6",
                 bn_eps: float = 1e-3) -> None:
        super().__init__()
        self.num_classes = num_classes

        def branch(k: int) -> nn.Module:
            holder = nn.Module()
            holder.module_list = nn.ModuleList(nn.Sequential(_cna(c, c, 3, 1, c, act, bn_eps), nn.Conv2d(c, a * k, 1))
                                               for c, a in zip(channels, anchors))
            return holder

        self.classification_head = branch(num_classes)
        self.regression_head = branch(4)

    def forward(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return (_flatten(self.classification_head.module_list, maps, self.num_classes),
                _flatten(self.regression_head.module_list, maps, 4))


class FusedHeads(nn.Module):
    """cvnets' SSD head: per map an optional 1x1 projection (conv + BN + act) then one separable conv (a plain
    1x1 on 1x1 maps) giving A * (4 + num_classes) channels, split into box codes and logits."""

    def __init__(self, channels: Sequence[int], proj_channels: Sequence[int], anchors: Sequence[int], num_classes: int,
                 bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.proj = nn.ModuleList()
        self.module_list = nn.ModuleList()
        for i, (c, p, a) in enumerate(zip(channels, proj_channels, anchors)):
            is_1x1 = i == len(channels) - 1  # the last extra map is 1x1 (global pool)
            if p != c and not is_1x1:
                self.proj.append(_cna(c, p, 1, act="relu", bn_eps=bn_eps, bn_momentum=0.1))
                c = p
            else:
                self.proj.append(nn.Identity())
            out = a * (4 + num_classes)
            self.module_list.append(nn.Conv2d(c, out, 1) if is_1x1 else
                                    SeparableConv(c, out, norm=False, bn_eps=bn_eps))

    def forward(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        both = _flatten([nn.Sequential(p, m) for p, m in zip(self.proj, self.module_list)], maps, 4 + self.num_classes)
        return both[..., 4:], both[..., :4]


def _flatten(modules: Sequence[nn.Module], maps: list[torch.Tensor], k: int) -> torch.Tensor:
    """Per-map predictions (B, A*k, H, W) -> one (B, sum(H*W*A), k), location-major then anchor (the anchor
    generator's order)."""
    out = []
    for module, x in zip(modules, maps):
        y = module(x)
        b, _, h, w = y.shape
        out.append(y.view(b, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, k))
    return torch.cat(out, 1)


def _normal_init(module: nn.Module, std: float = 0.03) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------- detector
class SSDLite(CarriesDataConfig, nn.Module):
    """SSDLite detector.

    forward(images (B, 3, H, W) in [0, 1], targets=None):
      - with targets (list of dicts `boxes` (N, 4) xyxy px float, `labels` (N,) int64 in 1..num_classes-1):
        {"bbox_regression", "classification"} scalar losses;
      - without: per image {"boxes" (K, 4) xyxy px, "scores" (K,), "labels" (K,) int64} after NMS.
    forward_raw(images) -> (boxes (B, A, 4) decoded xyxy px, scores (B, A, num_classes) softmax), no NMS:
      the export form.
    """

    def __init__(self, backbone: FeatureExtractor, extra: nn.ModuleList, head: nn.Module,
                 anchor_generator: DefaultBoxGenerator, num_classes: int, data_config: DataConfig, *,
                 iou_thresh: float = 0.5, score_thresh: float = 0.001, nms_thresh: float = 0.55,
                 detections_per_img: int = 300, topk_candidates: int = 300, neg_to_pos_ratio: int = 3) -> None:
        super().__init__()
        self.backbone = backbone
        self.extra = extra
        self.head = head
        self.anchor_generator = anchor_generator
        self.box_coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.matcher = det_utils.SSDMatcher(iou_thresh)
        self.num_classes = num_classes
        self.data_config = data_config
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.topk_candidates = detections_per_img, topk_candidates
        self.neg_to_pos_ratio = neg_to_pos_ratio

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Normalised-inside features: the backbone's two maps then one per extra layer."""
        maps = self.backbone(self.data_config.normalize(images))
        x = maps[-1]
        for layer in self.extra:
            x = layer(x)
            maps.append(x)
        return maps

    def anchors(self, images: torch.Tensor, maps: list[torch.Tensor]) -> torch.Tensor:
        """(A, 4) xyxy pixel anchors for these map sizes (the same for every image of the batch)."""
        h, w = images.shape[-2:]
        return self.anchor_generator(ImageList(images[:1], [(h, w)]), maps)[0]

    def head_outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """cls_logits (B, A, num_classes), bbox_regression (B, A, 4) box codes, anchors (A, 4)."""
        images = _as_batch(images)
        maps = self.feature_maps(images)
        cls_logits, bbox_regression = self.head(maps)
        return {"cls_logits": cls_logits, "bbox_regression": bbox_regression, "anchors": self.anchors(images, maps)}

    def forward_raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes (B, A, 4) xyxy px clipped to the image, scores (B, A, num_classes) softmax, column 0 background)."""
        images = _as_batch(images)
        out = self.head_outputs(images)
        b, a, _ = out["bbox_regression"].shape
        boxes = self.box_coder.decode_single(out["bbox_regression"].reshape(-1, 4), out["anchors"].repeat(b, 1))
        boxes = clip_boxes_to_image(boxes, images.shape[-2:]).view(b, a, 4)
        return boxes, F.softmax(out["cls_logits"], -1)

    def forward(self, images: torch.Tensor | list[torch.Tensor], targets: list[dict] | None = None):
        if targets is not None:
            return self.compute_loss(targets, self.head_outputs(images))
        boxes, scores = self.forward_raw(images)
        if boxes.is_meta:  # counting params / MACs on the meta device: NMS has data-dependent shapes
            return boxes, scores
        return self.postprocess(boxes, scores)

    # -- loss
    def compute_loss(self, targets: list[dict], out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision's SSD loss: Smooth-L1 on the matched anchors' codes + cross-entropy over the positives and
        the 3x as many hardest negatives, both divided by the number of positives."""
        anchors, logits, codes = out["anchors"], out["cls_logits"], out["bbox_regression"]
        if len(targets) != logits.shape[0]:
            raise ValueError(f"got {len(targets)} targets for a batch of {logits.shape[0]} images")
        cls_targets, box_losses = [], []
        for t, code in zip(targets, codes):
            boxes, labels = t["boxes"].to(anchors), t["labels"].to(anchors.device)
            ct = torch.zeros(anchors.shape[0], dtype=torch.int64, device=anchors.device)
            if boxes.numel() == 0:
                box_losses.append(code.sum() * 0.0)
            else:
                matched = self.matcher(box_iou(boxes, anchors))  # (A,): gt index or -1
                fg = torch.nonzero(matched >= 0).squeeze(1)
                target_codes = self.box_coder.encode_single(boxes[matched[fg]], anchors[fg])
                box_losses.append(F.smooth_l1_loss(code[fg], target_codes, reduction="sum"))
                ct[fg] = labels[matched[fg]]
            cls_targets.append(ct)
        cls_t = torch.stack(cls_targets)  # (B, A)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), cls_t.view(-1), reduction="none").view_as(cls_t)
        fg_mask = cls_t > 0
        num_neg = self.neg_to_pos_ratio * fg_mask.sum(1, keepdim=True)  # (B, 1)
        neg_ce = ce.masked_fill(fg_mask, -math.inf)  # positives never count as negatives
        rank = neg_ce.sort(1, descending=True)[1].sort(1)[1]  # each anchor's place in its image's CE order
        hard_neg = rank < num_neg
        n = max(1, int(fg_mask.sum()))
        return {"bbox_regression": torch.stack(box_losses).sum() / n,
                "classification": (ce[fg_mask].sum() + ce[hard_neg].sum()) / n}

    # -- post-processing
    def postprocess(self, boxes: torch.Tensor, scores: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per image and class (background excluded): score > score_thresh, the top `topk_candidates`, then
        class-wise NMS and the best `detections_per_img`. boxes (B, A, 4), scores (B, A, C)."""
        results = []
        for b_img, s_img in zip(boxes, scores):
            top_s, top_i = s_img[:, 1:].topk(min(self.topk_candidates, s_img.shape[0]), dim=0)  # (k, C-1) per class
            labels = torch.arange(1, s_img.shape[1], device=s_img.device).expand_as(top_s)
            keep = top_s > self.score_thresh
            sel_s, sel_b, sel_l = top_s[keep], b_img[top_i[keep]], labels[keep]
            kept = batched_nms(sel_b, sel_s, sel_l, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": sel_b[kept], "scores": sel_s[kept], "labels": sel_l[kept]})
        return results


def _as_batch(images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    if isinstance(images, (list, tuple)):
        sizes = {tuple(i.shape) for i in images}
        if len(sizes) != 1:
            raise ValueError(f"images of a batch must share one size (resize them first), got {sorted(sizes)}")
        images = torch.stack(list(images))
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"SSDLite takes (B, 3, H, W) float images in [0, 1], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"SSDLite takes float images in [0, 1], got dtype {images.dtype}; divide uint8 by 255")
    return images


# --------------------------------------------------------------------------------------------- builder
class SSDAnchors(DefaultBoxGenerator):
    """torchvision's DefaultBoxGenerator, optionally with the TF object-detection API's reduced lowest layer:
    3 boxes (scale 0.1, ratios 1, 2, 1/2) on the first map (`reduce_boxes_in_lowest_layer`, MobileNetV2 paper)."""

    def __init__(self, *args: Any, reduced_first: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reduced_first = reduced_first
        if reduced_first:
            r = math.sqrt(2.0)
            self._wh_pairs[0] = torch.tensor([[0.1, 0.1], [0.1 * r, 0.1 / r], [0.1 / r, 0.1 * r]], device="cpu")

    def num_anchors_per_location(self) -> list[int]:
        n = super().num_anchors_per_location()
        return [3] + n[1:] if self.reduced_first else n


def build_ssdlite(
    backbone: FeatureExtractor,
    num_classes: int,
    data_config: DataConfig,
    *,
    layout: str = "torchvision",
    extra_channels: Sequence[int] | None = None,
    proj_channels: Sequence[int] | None = None,
    bn_eps: float | None = None,
    reduced_first_anchors: bool = False,
    anchor_ratios: tuple[float, float] = (0.2, 0.95),
    **detector_kw: Any,
) -> SSDLite:
    """Extras, heads and anchors of `layout` on `backbone`'s two maps.

    torchvision: extras [512, 256, 256, 128] (1x1 / dw 3x3 s2 / 1x1, ReLU6), separate dw-separable class and box
    heads, anchors DefaultBoxGenerator([[2, 3]] * 6, min_ratio 0.2, max_ratio 0.95), BN eps 1e-3.
    cvnets: extras separable s2 to [256, 128, 128] and pool + 1x1 to 64 (ReLU), 1x1 projections of the two
    backbone maps to [512, 256], fused separable heads, cvnets anchors, BN eps 1e-5.
    reduced_first_anchors (torchvision layout): 3 anchors per location on the first map (TF OD API).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background class too, so it must be >= 2, got {num_classes}")
    check_choice(layout, LAYOUTS, "SSDLite layout")
    c4, c5 = backbone.channels()
    if layout == "torchvision":
        eps = 1e-3 if bn_eps is None else bn_eps
        extra_channels = list(extra_channels or (512, 256, 256, 128))
        extra = nn.ModuleList(torchvision_extra(i, o, "relu6", eps)
                              for i, o in zip([c5] + extra_channels, extra_channels))
        channels = [c4, c5] + extra_channels
        anchor_gen = SSDAnchors([[2, 3]] * len(channels), min_ratio=anchor_ratios[0], max_ratio=anchor_ratios[1],
                                reduced_first=reduced_first_anchors)
        head: nn.Module = SSDLiteHeads(channels, anchor_gen.num_anchors_per_location(), num_classes, "relu6", eps)
    else:
        eps = 1e-5 if bn_eps is None else bn_eps
        proj_channels = list(proj_channels or (512, 256, 256, 128, 128, 64))
        channels = [c4, c5] + proj_channels[2:]
        extra = nn.ModuleList()
        for i, (chs, c) in enumerate(zip(channels[1:], channels[2:]), 3):
            if i < len(channels):
                extra.append(SeparableConv(chs, c, stride=2, act="relu", bn_eps=eps))
            else:  # the last extra map: global average pool -> 1x1 conv (bias) -> ReLU, (B, chs, H, W) -> (B, c, 1, 1)
                extra.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(chs, c, 1), nn.ReLU(inplace=True)))
        # cvnets' anchors: scales linspace(0.1, 1.05, maps + 1), ratios [2, 3] then [2] on the last map
        n = len(channels)
        scales = [0.1 + (1.05 - 0.1) * i / n for i in range(n + 1)]
        anchor_gen = DefaultBoxGenerator([[2, 3]] * (n - 1) + [[2]], scales=scales)
        head = FusedHeads(channels, proj_channels, anchor_gen.num_anchors_per_location(), num_classes, eps)
    _normal_init(extra)
    _normal_init(head)
    return SSDLite(backbone, extra, head, anchor_gen, num_classes, data_config, **detector_kw)


def create_detector(
    head: str = "ssdlite",
    *,
    backbone: str,
    num_classes: int,
    layout: str | None = None,
    feature_location: str | None = None,
    image_size: int | tuple[int, int] | None = None,
    backbone_kwargs: dict | None = None,
    **kw: Any,
) -> nn.Module:
    """SSDLite on any registered backbone `backbone` (a `create_model` name), `num_classes` incl. background;
    head "mobileformer_detr": `detr.build_mobileformer_detr` (a Mobile-Former backbone, DETR-style; its keywords;
    image_size None: DETR's 800 x 1333). The arguments are recorded as `detector_config` (saved beside the weights).

    layout: "torchvision" (default) or "cvnets" (default for MobileViT). feature_location: "expansion"
    (inverted-residual families' default: C4 = expansion of the first stride-32 block), "stages" (MobileViT),
    "last2" (the last two `feature_info` maps; every other family). `image_size` is the data config's input
    size (the detector itself takes any size; default 320). Other keywords: `extra_channels`, `proj_channels`, `bn_eps`,
    `iou_thresh`, `score_thresh`, `nms_thresh`, `detections_per_img`, `topk_candidates`.
    """
    if head == "mobileformer_detr":
        if layout is not None or feature_location is not None:
            raise ValueError("layout and feature_location are SSDLite's; mobileformer_detr takes levels=(32, 16, 8)")
        from .detr import build_mobileformer_detr

        size = (800, 1333) if image_size is None else image_size
        model = build_mobileformer_detr(backbone, num_classes, image_size=size, backbone_kwargs=backbone_kwargs, **kw)
        record = {"image_size": list(size) if isinstance(size, tuple) else size}
    elif head == "ssdlite":
        image_size = 320 if image_size is None else image_size
        kind = feature_location or default_kind(backbone)
        body = detection_backbone(backbone, kind, **(backbone_kwargs or {}))
        if layout is None:
            layout = "cvnets" if kind == "stages" else "torchvision"
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        model = build_ssdlite(body, num_classes, resolve_data_config(body, input_size=(3, *size)), layout=layout, **kw)
        record = {"layout": layout, "feature_location": kind, "image_size": image_size}
    else:
        raise ValueError(f"unknown detection head {head!r}; accepted: ssdlite, mobileformer_detr")
    model.detector_config = {"head": head, "backbone": backbone, "num_classes": num_classes, **record, **kw}
    return model
