"""Mobile-Former DETR: an end-to-end set-prediction detector whose backbone *and* head are Mobile-Former
(Chen et al., CVPR 2022, arXiv 2108.05895, sec. "object detection"; the authors never released this code).

What the sources fix (shared/reference/tasks.md section 4): DETR's set prediction (Carion et al., 2020) with
Hungarian matching, its costs and loss weights; a Mobile-Former backbone with frozen BatchNorm; the object
queries are the Former's tokens; a head of Mobile-Former blocks in place of DETR's transformer, walking the
backbone's maps from coarse to fine down to one resolution finer than DETR's 1/16; position embeddings added
to the map and adapted per level (AdaptPE); a spatial-aware Dynamic ReLU in the head's Mobile part.

One head block, on the map X (B, C, H, W) and the queries Z (B, Q, d) (this library's Mobile-Former modules):
1. Mobile->Former (`MobileToFormer`, gated): every query reads the map;
2. Former (`Former`): self-attention over the queries + FFN (both post-LN);
3. Mobile (`LightMobile`): dw 3x3 + BN -> spatial-aware DY-ReLU -> 1x1 + BN, a residual on X; the activation's
   per-position token weights are step 1's attention logits (mean over heads) normalised over the queries,
   so each position takes the slopes of the queries that read it;
4. Mobile<-Former (`FormerToMobile`): the map reads the queries (added to X).
After every block the shared class and box heads read the queries (DETR's auxiliary outputs).

Level structure: level l's map is a 1x1 conv + BN of backbone map l to `head_chs`, plus the previous (coarser)
level's head map upsampled (nearest), plus AdaptPE_l(PE): DETR's fixed sine embedding (normalised coordinates,
so one per level's size) through a per-level learnable 1x1 conv.

Choices the sources leave open (constructor arguments; defaults and why):
- `levels=(32, 16, 8)`, `blocks=(2, 2, 2)`: coarse to fine, the finest one step below DETR-DC5's 1/16 as the
  seed says; six blocks, as DETR's six decoder layers, two per level so every level refines once after the
  queries first read it.
- `num_queries=100`, `token_dim=256`, `former_heads=8`, `ffn_dim=2048`: DETR's decoder width, so the
  comparison with DETR isolates the structure. `bridge_heads=8` (Mobile-Former's classifiers use 2 on
  narrow maps; a 256-wide head map splits into DETR's 8). `head_chs=256`: DETR's hidden width on the map.
- `mobile_expansion=1`: the light Mobile part keeps the spatial DY-ReLU's per-position mixing (2C x Q per
  position) affordable at 1/8 of 800x1333 with 100 queries.
- `reference_boxes=False` (True: a fast-converging extension for small data, not in the sources: every query
  has a learned anchor box, its sine embedding through an MLP is added to the query before each block (DAB-DETR)
  and each block's box head predicts logit-space offsets from the previous block's boxes (Deformable DETR's
  iterative refinement, gradients stopped between blocks)). `prior_scale=0` (> 0, with reference boxes: the
  Mobile->Former logits get the log of a Gaussian around each query's box, its sigmas `prior_scale` x the box
  sides, SMCA-DETR's spatial modulation: queries read their neighbourhood from the first step, which plain
  DETR attention takes hundreds of epochs to learn). `two_stage=False` (True, with reference boxes: Deformable
  DETR's two-stage form: every cell of the finest map (the level projections summed there, so the cells see the
  coarse levels' semantics) proposes a class and a box, trained with the same set loss,
  and the `num_queries` best proposals give the queries their reference boxes and, through a Linear of the cell's
  feature, their content; the learned queries are then per-rank offsets). `dense_proposals=False` (True, with
  two_stage: the proposals train with a one-to-many assignment instead, every cell inside a target box a positive
  (Co-DETR's collaborative assignment): far more class signal per image than one cell per object).
- `aux_start=0`: blocks before this index add no auxiliary loss (every block's output trains, as DETR).
- `freeze_bn=True` (the seed's recipe: backbone BatchNorm frozen, statistics and affine); `freeze_backbone=False`
  (True: the whole backbone fixed, DETR's lr_backbone=0; on 2 CPU cores it halves a training step).

Classes: `num_classes` counts the no-object class, as SSDLite's counts the background, and column 0 of the
logits is DETR's no-object ("empty") class, so data labels 1..num_classes-1 index the logits directly.

Interface (SSDLite's, so `DetectTask`, `mobilevision predict` and export work unchanged): float images in
[0, 1] (B, 3, H, W), normalised inside with `data_config`; with targets (boxes xyxy px, labels 1..K) the loss
dict; without, per image the top `detections_per_img` (query, class) pairs by score, no NMS (Deformable DETR's
post-processing): {"boxes" xyxy input px, "scores", "labels"}. `forward_raw` gives the export form.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from mobilevision.data.config import DataConfig, resolve_data_config
from mobilevision.layers.conv_norm_act import ConvNormAct
from mobilevision.layers.dynamic_relu import SpatialDynamicReLU
from mobilevision.models.factory import create_model
from mobilevision.models.features import CarriesDataConfig, FeatureExtractor
from mobilevision.models.mobile_former import Former, FormerToMobile, MobileToFormer
from mobilevision.models.registry import get_config

from .ssdlite import _as_batch


# ------------------------------------------------------------------------------------------------ layers
def _sine(coords: torch.Tensor, n: int, temperature: float = 10000.0) -> torch.Tensor:
    """coords (...) -> (..., n): coords / temperature^(2 (i // 2) / n), sin on even i, cos on odd i (DETR's)."""
    freq = temperature ** (2 * (torch.arange(n, device=coords.device, dtype=coords.dtype) // 2) / n)
    ang = coords[..., None] / freq
    return torch.stack((ang[..., 0::2].sin(), ang[..., 1::2].cos()), -1).flatten(-2)


def sine_position_embedding(h: int, w: int, dim: int, temperature: float = 10000.0, *,
                            device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """DETR's normalised sine embedding (1, dim, h, w): first dim/2 channels encode y, the rest x; coordinates
    (i + 1) / n * 2 pi, so maps of any size span the same range; sin on even, cos on odd frequencies."""
    if dim % 4:
        raise ValueError(f"the sine position embedding needs a width divisible by 4, got {dim}")
    half = dim // 2
    eps, scale = 1e-6, 2 * math.pi
    py = _sine((torch.arange(h, device=device, dtype=dtype) + 1) / (h + eps) * scale, half, temperature)  # (h, half)
    px = _sine((torch.arange(w, device=device, dtype=dtype) + 1) / (w + eps) * scale, half, temperature)  # (w, half)
    pos = torch.cat((py[:, None, :].expand(h, w, half), px[None, :, :].expand(h, w, half)), dim=2)  # (h, w, dim)
    return pos.permute(2, 0, 1)[None]


class LightMobile(nn.Module):
    """The head's Mobile part: dw 3x3 (channel multiplier `expansion`) + BN -> spatial-aware DY-ReLU -> 1x1 + BN.

    forward(x (B, C, H, W), tokens (B, Q, d), mix_logits (B, Q, H, W)) -> (B, C, H, W), the residual branch.
    """

    def __init__(self, chs: int, token_dim: int, expansion: int = 1) -> None:
        super().__init__()
        self.conv_dw = ConvNormAct(chs, chs * expansion, 3, groups=chs, act=None)
        self.act = SpatialDynamicReLU(chs * expansion, token_dim)
        self.conv_pw = ConvNormAct(chs * expansion, chs, 1, act=None)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mix_logits: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.act(self.conv_dw(x), tokens, mix_logits))


class PriorMobileToFormer(MobileToFormer):
    """`MobileToFormer` whose attention logits may take an additive prior `bias` (B, Q, HW), shared by the heads
    (the Gaussian around each query's reference box). forward(x, tokens, bias=None) -> (tokens, logits)."""

    def forward(self, x: torch.Tensor, tokens: torch.Tensor,
                bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if bias is None:
            return super().forward(x, tokens)
        b, c = x.shape[:2]
        logits, kv = self.attention_logits(x, tokens)
        logits = logits + bias[:, None]  # (B, heads, Q, HW)
        out = (logits.softmax(dim=-1) @ kv.transpose(-1, -2)).transpose(1, 2).reshape(b, tokens.shape[1], c)
        if self.gate is not None:
            out = out * (2.0 * F.hardsigmoid(self.gate(tokens)))
        return self.norm(tokens + self.drop_path(self.proj(out))), logits


def gaussian_prior(ref: torch.Tensor, h: int, w: int, scale: float = 1.0) -> torch.Tensor:
    """log of a Gaussian around each reference box on an (h, w) grid (SMCA-DETR's spatial modulation):
    -((x - cx)^2 / (2 (scale w)^2) + (y - cy)^2 / (2 (scale h)^2)) at the cell centres, (B, Q, h*w).
    ref (B, Q, 4) logits of (cx, cy, w, h) in [0, 1]."""
    box = ref.sigmoid()
    ys = (torch.arange(h, device=ref.device, dtype=ref.dtype) + 0.5) / h
    xs = (torch.arange(w, device=ref.device, dtype=ref.dtype) + 0.5) / w
    dx = (xs[None, None, None, :] - box[..., 0, None, None]) / (scale * box[..., 2, None, None])  # (B, Q, 1, w)
    dy = (ys[None, None, :, None] - box[..., 1, None, None]) / (scale * box[..., 3, None, None])  # (B, Q, h, 1)
    return (-0.5 * (dx ** 2 + dy ** 2)).flatten(2)


class HeadBlock(nn.Module):
    """Mobile->Former, Former, Mobile (light, spatial DY-ReLU, residual), Mobile<-Former.

    forward(x (B, C, H, W), queries (B, Q, d)) -> (x (B, C, H, W), queries (B, Q, d)).
    """

    def __init__(self, chs: int, token_dim: int, bridge_heads: int = 8, former_heads: int = 8, ffn_dim: int = 2048,
                 mobile_expansion: int = 1) -> None:
        super().__init__()
        if ffn_dim % token_dim:
            raise ValueError(f"ffn_dim {ffn_dim} must be a multiple of token_dim {token_dim} (the Former's FFN ratio)")
        if token_dim % former_heads:
            raise ValueError(f"token_dim {token_dim} must be divisible by former_heads {former_heads}")
        self.mobile_to_former = PriorMobileToFormer(chs, token_dim, bridge_heads, gate=True)
        self.former = Former(token_dim, former_heads, ffn_dim // token_dim)
        self.mobile = LightMobile(chs, token_dim, mobile_expansion)
        self.former_to_mobile = FormerToMobile(chs, token_dim, bridge_heads)

    def forward(self, x: torch.Tensor, queries: torch.Tensor,
                prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`prior` (B, Q, HW): an additive bias on the Mobile->Former attention logits (None: none)."""
        b, _, h, w = x.shape
        queries, logits = self.mobile_to_former(x, queries, prior)  # logits (B, heads, Q, HW)
        queries = self.former(queries)
        mix_logits = logits.mean(dim=1).reshape(b, -1, h, w)  # (B, Q, H, W)
        x = x + self.mobile(x, queries, mix_logits)
        return self.former_to_mobile(x, queries), queries


class BoxMLP(nn.Sequential):
    """DETR's box head: `layers` Linears with ReLU between, (..., d) -> (..., 4) before the sigmoid."""

    def __init__(self, dim: int, layers: int = 3) -> None:
        hidden = [m for _ in range(layers - 1) for m in (nn.Linear(dim, dim), nn.ReLU(inplace=True))]
        super().__init__(*hidden, nn.Linear(dim, 4))


def freeze_batchnorm(module: nn.Module) -> list[nn.BatchNorm2d]:
    """Freeze every BatchNorm2d in `module` (statistics and affine): no gradients; `MobileFormerDETR.train`
    keeps them in eval mode. Returns the frozen layers."""
    frozen = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in frozen:
        m.requires_grad_(False)
        m.eval()
    return frozen


# ----------------------------------------------------------------------------------------- matcher + loss
def matching_cost(logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, target_boxes: torch.Tensor,
                  cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0) -> torch.Tensor:
    """DETR's matching cost (Q, N) of one image: -cost_class * p(label) + cost_bbox * L1 + cost_giou * -GIoU.

    logits (Q, K), boxes (Q, 4) and target_boxes (N, 4) cxcywh in [0, 1], labels (N,) column indices of logits.
    """
    prob = logits.softmax(-1)[:, labels]  # (Q, N)
    l1 = torch.cdist(boxes, target_boxes, p=1)
    giou = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy"))
    return -cost_class * prob + cost_bbox * l1 - cost_giou * giou


class HungarianMatcher:
    """The optimal one-to-one assignment of targets to queries under `matching_cost` (scipy's
    linear_sum_assignment). __call__(logits (Q, K), boxes (Q, 4), labels (N,), target_boxes (N, 4)) ->
    (query indices (N,), target indices (N,)) int64, sorted by query; N <= Q."""

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0) -> None:
        self.costs = dict(cost_class=cost_class, cost_bbox=cost_bbox, cost_giou=cost_giou)

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                 target_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if labels.numel() == 0:
            empty = torch.zeros(0, dtype=torch.int64, device=logits.device)
            return empty, empty
        if labels.numel() > logits.shape[0]:
            raise ValueError(f"an image has {labels.numel()} objects but the detector only {logits.shape[0]} "
                             "queries; raise num_queries")
        cost = matching_cost(logits.float(), boxes.float(), labels, target_boxes.float(), **self.costs)
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        return tuple(torch.as_tensor(i, dtype=torch.int64, device=logits.device) for i in (rows, cols))


def brute_force_match(cost: torch.Tensor) -> float:
    """The lowest total cost over every one-to-one assignment of the N columns to distinct rows of a (Q, N)
    cost matrix (Q! / (Q - N)! of them: small cases only; the matcher's test reference)."""
    q, n = cost.shape
    c = cost.detach().cpu().double().numpy()
    return min(float(c[list(rows), np.arange(n)].sum()) for rows in itertools.permutations(range(q), n))


def box_losses(src: torch.Tensor, tgt: torch.Tensor, n: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 and (1 - GIoU) of matched (M, 4) unit cxcywh boxes, each summed and divided by `n`."""
    l1 = F.l1_loss(src, tgt, reduction="sum") / n
    giou = torch.diag(generalized_box_iou(box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")))
    return l1, (1 - giou).sum() / n


class SetCriterion(nn.Module):
    """DETR's loss: per output (the final one and every auxiliary one), Hungarian matching, then cross-entropy
    over all queries (unmatched ones to no-object, class 0, weighted `no_object_weight`; weighted mean), and
    L1 + (1 - GIoU) on the matched boxes, each divided by the number of target boxes in the batch.
    Weights: class 1, L1 5, GIoU 2 (DETR's, also its matching costs)."""

    def __init__(self, num_classes: int, no_object_weight: float = 0.1, weight_class: float = 1.0,
                 weight_bbox: float = 5.0, weight_giou: float = 2.0, matcher: HungarianMatcher | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher or HungarianMatcher(weight_class, weight_bbox, weight_giou)
        self.weights = (weight_class, weight_bbox, weight_giou)
        class_weight = torch.ones(num_classes)
        class_weight[0] = no_object_weight
        self.register_buffer("class_weight", class_weight, persistent=False)

    def single(self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict],
               num_boxes: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(CE, L1, GIoU) unweighted losses of one output: logits (B, Q, K), boxes (B, Q, 4) cxcywh in [0, 1];
        targets hold `labels` (N,) and unit cxcywh `boxes` (N, 4)."""
        target_classes = torch.zeros(logits.shape[:2], dtype=torch.int64, device=logits.device)
        src, tgt = [], []
        for i, t in enumerate(targets):
            qi, ti = self.matcher(logits[i], boxes[i], t["labels"], t["boxes"])
            target_classes[i, qi] = t["labels"][ti]
            src.append(boxes[i, qi])
            tgt.append(t["boxes"][ti])
        ce = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=self.class_weight.to(logits.dtype))
        return (ce, *box_losses(torch.cat(src), torch.cat(tgt), num_boxes))

    def forward(self, outputs: Sequence[tuple[torch.Tensor, torch.Tensor]],
                targets: list[dict]) -> dict[str, torch.Tensor]:
        """outputs: (logits, boxes) per head block that trains (aux ones first, the final last). Returns
        `classification` (sum of the weighted CE terms), `bbox_regression` (sum of the weighted L1 + GIoU terms)
        and, for the logs, the final output's unweighted `ce`, `l1`, `giou`."""
        for t in targets:
            lab = t["labels"]
            if lab.numel() and (int(lab.min()) < 1 or int(lab.max()) >= self.num_classes):
                raise ValueError(f"target labels must be in 1..{self.num_classes - 1} (0 is no-object), got "
                                 f"{lab.tolist()}")
        num_boxes = max(1.0, float(sum(t["labels"].numel() for t in targets)))
        wc, wb, wg = self.weights
        cls_sum, box_sum, last = 0.0, 0.0, None
        for logits, boxes in outputs:
            last = self.single(logits, boxes, targets, num_boxes)
            cls_sum = cls_sum + wc * last[0]
            box_sum = box_sum + wb * last[1] + wg * last[2]
        ce, l1, giou = last
        return {"classification": cls_sum, "bbox_regression": box_sum, "ce": ce.detach(), "l1": l1.detach(),
                "giou": giou.detach()}


def dense_proposal_loss(logits: torch.Tensor, boxes: torch.Tensor, centres: torch.Tensor, targets: list[dict],
                        class_weight: torch.Tensor, weights: tuple[float, float, float] = (1.0, 5.0, 2.0)
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """One-to-many loss of dense proposals (Co-DETR's / FCOS's assignment): a cell whose centre lies inside a target
    box takes that target (the smallest, when several hold it), the others no-object; weighted cross-entropy over all
    cells and L1 + GIoU over the assigned ones. logits (B, HW, K), boxes (B, HW, 4) cxcywh, centres (HW, 2) x, y in
    [0, 1]; targets: unit cxcywh `boxes`, `labels`. Returns (weighted class loss, weighted box loss)."""
    wc, wb, wg = weights
    target_classes = torch.zeros(logits.shape[:2], dtype=torch.int64, device=logits.device)
    src, tgt = [], []
    for i, t in enumerate(targets):
        if t["labels"].numel() == 0:
            continue
        xyxy = box_convert(t["boxes"], "cxcywh", "xyxy")  # (N, 4)
        cx, cy = centres[:, 0, None], centres[:, 1, None]  # (HW, 1)
        inside = (cx > xyxy[:, 0]) & (cx < xyxy[:, 2]) & (cy > xyxy[:, 1]) & (cy < xyxy[:, 3])  # (HW, N)
        area = (t["boxes"][:, 2] * t["boxes"][:, 3]).expand_as(inside).masked_fill(~inside, float("inf"))
        best = area.argmin(1)
        pos = inside.any(1)
        target_classes[i, pos] = t["labels"][best[pos]]
        src.append(boxes[i, pos])
        tgt.append(t["boxes"][best[pos]])
    ce = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=class_weight.to(logits.dtype))
    if not src or sum(len(x) for x in src) == 0:
        return wc * ce, boxes.sum() * 0.0
    src_b = torch.cat(src)
    l1, giou = box_losses(src_b, torch.cat(tgt), len(src_b))
    return wc * ce, wb * l1 + wg * giou


# ------------------------------------------------------------------------------------------------ detector
class MobileFormerDETR(CarriesDataConfig, nn.Module):
    """Mobile-Former backbone + Mobile-Former head of `HeadBlock`s over `levels` (see the module docstring).

    forward(images (B, 3, H, W) in [0, 1], targets=None): with targets (list of {"boxes" (N, 4) xyxy px,
    "labels" (N,) in 1..num_classes-1}) the loss dict of `SetCriterion`; without, per image {"boxes" (k, 4) xyxy
    px, "scores" (k,), "labels" (k,)}, the top k = `detections_per_img` (query, class) pairs.
    `forward_outputs(images)` -> [(logits (B, Q, num_classes), boxes (B, Q, 4) cxcywh in [0, 1])] per block.
    `forward_raw(images)` -> (boxes (B, Q, 4) xyxy px, scores (B, Q, num_classes) softmax, column 0 no-object).
    """

    def __init__(self, backbone: FeatureExtractor, num_classes: int, data_config: DataConfig, *,
                 num_queries: int = 100, token_dim: int = 256, head_chs: int = 256, blocks: Sequence[int] = (2, 2, 2),
                 bridge_heads: int = 8, former_heads: int = 8, ffn_dim: int = 2048, mobile_expansion: int = 1,
                 freeze_bn: bool = True, freeze_backbone: bool = False, reference_boxes: bool = False,
                 prior_scale: float = 0.0, two_stage: bool = False, dense_proposals: bool = False,
                 query_std: float = 1.0, aux_start: int = 0, no_object_weight: float = 0.1,
                 detections_per_img: int = 100) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the no-object class too, so it must be >= 2, got {num_classes}")
        if len(blocks) != len(backbone.feature_info):
            raise ValueError(f"blocks {tuple(blocks)} needs one count per level, the backbone gives "
                             f"{len(backbone.feature_info)} maps")
        if any(n < 1 for n in blocks):
            raise ValueError(f"every level needs at least one head block, got blocks={tuple(blocks)}")
        if not 0 <= aux_start < sum(blocks):
            raise ValueError(f"aux_start must be in 0..{sum(blocks) - 1} (the final block always trains), "
                             f"got {aux_start}")
        if num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {num_queries}")
        self.backbone = backbone
        self.num_classes, self.num_queries = num_classes, num_queries
        self.data_config = data_config
        self.aux_start, self.detections_per_img = aux_start, detections_per_img
        self.frozen_bn = freeze_batchnorm(backbone) if freeze_bn or freeze_backbone else []
        if freeze_backbone:  # DETR with lr_backbone 0: the backbone is a fixed feature extractor
            backbone.requires_grad_(False)
        chs = backbone.channels()[::-1]  # coarse to fine
        self.levels = backbone.reductions()[::-1]
        self.queries = nn.Parameter(torch.randn(num_queries, token_dim) * query_std)  # (Q, d): the Former's tokens
        self.input_proj = nn.ModuleList(ConvNormAct(c, head_chs, 1, act=None) for c in chs)
        self.pos_adapt = nn.ModuleList(nn.Conv2d(head_chs, head_chs, 1) for _ in chs)  # AdaptPE, one per level
        self.blocks = nn.ModuleList(nn.ModuleList(
            HeadBlock(head_chs, token_dim, bridge_heads, former_heads, ffn_dim, mobile_expansion) for _ in range(n))
            for n in blocks)
        self.class_head = nn.Linear(token_dim, num_classes)
        self.box_head = BoxMLP(token_dim, 3)
        self.reference_boxes, self.prior_scale, self.two_stage = reference_boxes, prior_scale, two_stage
        self.dense_proposals = dense_proposals
        if dense_proposals and not two_stage:
            raise ValueError("dense_proposals is the proposals' loss: set two_stage=True (and reference_boxes=True)")
        if (prior_scale or two_stage) and not reference_boxes:
            raise ValueError("prior_scale > 0 and two_stage work on each query's reference box: "
                             "set reference_boxes=True")
        if two_stage:  # dense proposals on the finest level: per position class logits and a box offset
            self.prop_cls = nn.Conv2d(head_chs, num_classes, 1)
            self.prop_box = nn.Conv2d(head_chs, 4, 1)
            self.prop_embed = nn.Linear(head_chs, token_dim)
            nn.init.zeros_(self.prop_box.weight)
            nn.init.zeros_(self.prop_box.bias)
        if reference_boxes:
            # per-query anchor boxes (cx, cy, w, h) in logit space: centres spread over the image, sides ~1/10
            if not two_stage:  # (two-stage queries take their boxes from the proposals)
                ref = torch.cat([torch.rand(num_queries, 2) * 0.8 + 0.1, torch.full((num_queries, 2), 0.1)], 1)
                self.ref_logits = nn.Parameter(torch.logit(ref))
            if token_dim % 8:
                raise ValueError(f"reference_boxes embeds 4 coordinates in token_dim/4 sines and cosines each: "
                                 f"token_dim must be divisible by 8, got {token_dim}")
            self.query_pos = nn.Sequential(nn.Linear(token_dim, token_dim), nn.ReLU(inplace=True),
                                           nn.Linear(token_dim, token_dim))
            nn.init.zeros_(self.box_head[-1].weight)  # the first boxes are the anchors
            nn.init.zeros_(self.box_head[-1].bias)
        self.criterion = SetCriterion(num_classes, no_object_weight)

    def train(self, mode: bool = True) -> "MobileFormerDETR":
        super().train(mode)
        for m in self.frozen_bn:  # frozen statistics stay the ones the backbone was trained with
            m.eval()
        return self

    def no_weight_decay(self) -> set[str]:
        return {"queries"}

    def predict(self, queries: torch.Tensor, ref: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B, Q, d) -> (logits (B, Q, num_classes), boxes (B, Q, 4) cxcywh in [0, 1]); with reference
        boxes `ref` (B, Q, 4) in logit space the box head predicts offsets from them."""
        delta = self.box_head(queries)
        return self.class_head(queries), (delta if ref is None else delta + ref).sigmoid()

    def _query_pos(self, ref: torch.Tensor) -> torch.Tensor:
        """(B, Q, 4) reference logits -> (B, Q, d): a sine embedding of the boxes' centres and sides through an MLP
        (DAB-DETR's positional queries), added to the queries before each block."""
        emb = _sine(ref.sigmoid() * (2 * math.pi), self.queries.shape[1] // 4)  # (B, Q, 4, d/4)
        return self.query_pos(emb.flatten(2))

    def proposals(self, fine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense proposals of the finest head map (B, C, H, W): (logits (B, HW, num_classes), boxes (B, HW, 4)
        cxcywh in [0, 1]), each box an offset in logit space from its cell's anchor (the cell centre, sides 0.1)."""
        h, w = fine.shape[-2:]
        ys = (torch.arange(h, device=fine.device, dtype=fine.dtype) + 0.5) / h
        xs = (torch.arange(w, device=fine.device, dtype=fine.dtype) + 0.5) / w
        centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)  # (HW, 2) x, y row-major
        anchors = torch.logit(torch.cat([centres, torch.full_like(centres, 0.1)], 1))  # (HW, 4)
        logits = self.prop_cls(fine).flatten(2).transpose(1, 2)
        boxes = (self.prop_box(fine).flatten(2).transpose(1, 2) + anchors).sigmoid()
        self._centres = centres  # for the dense proposal loss of this forward
        return logits, boxes

    def _select(self, fine: torch.Tensor, logits: torch.Tensor,
                boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The Q best proposals by foreground score: (query content (B, Q, d), reference logits (B, Q, 4))."""
        k = self.num_queries
        if logits.shape[1] < k:
            raise ValueError(f"two_stage picks {k} queries from {logits.shape[1]} positions of the finest map: use "
                             "a larger input or fewer queries")
        idx = logits.softmax(-1)[..., 1:].amax(-1).topk(k, dim=1).indices  # (B, Q)
        ref = torch.logit(boxes.detach().gather(1, idx[..., None].expand(-1, -1, 4)).clamp(1e-4, 1 - 1e-4))
        feat = fine.flatten(2).transpose(1, 2)
        feat = feat.gather(1, idx[..., None].expand(-1, -1, feat.shape[-1]))  # (B, Q, C)
        return self.queries[None] + self.prop_embed(feat), ref

    def forward_outputs(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self._forward(images)[0]

    def _forward(self, images: torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], tuple | None]:
        """(per-block outputs, the dense proposals (logits, boxes) or None)."""
        images = _as_batch(images)
        maps = self.backbone(self.data_config.normalize(images))[::-1]  # coarse to fine
        projected = [proj(feat) for feat, proj in zip(maps, self.input_proj)]  # (B, C, H_l, W_l)
        props = None
        if self.two_stage:  # proposals read every level: the finest map plus the coarser ones upsampled
            fine = projected[-1]
            for coarse in projected[:-1]:
                fine = fine + F.interpolate(coarse, size=fine.shape[-2:], mode="nearest")
            props = self.proposals(fine)
            queries, ref = self._select(fine, *props)
        else:
            queries = self.queries.repeat(images.shape[0], 1, 1)  # (B, Q, d)
            ref = self.ref_logits.repeat(images.shape[0], 1, 1) if self.reference_boxes else None  # (B, Q, 4)
        x, outputs = None, []
        for y, adapt, level_blocks in zip(projected, self.pos_adapt, self.blocks):
            if x is not None:
                y = y + F.interpolate(x, size=y.shape[-2:], mode="nearest")
            h, w = y.shape[-2:]
            x = y + adapt(sine_position_embedding(h, w, y.shape[1], device=y.device, dtype=y.dtype))
            for block in level_blocks:
                if ref is not None:
                    queries = queries + self._query_pos(ref)
                prior = gaussian_prior(ref, h, w, self.prior_scale) if self.prior_scale > 0 else None  # needs ref
                x, queries = block(x, queries, prior)
                logits, boxes = self.predict(queries, ref)
                outputs.append((logits, boxes))
                if ref is not None:  # iterative refinement: the next block starts from these boxes
                    ref = torch.logit(boxes.detach().clamp(1e-4, 1 - 1e-4))
        return outputs, props

    def forward_raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The export form: (boxes (B, Q, 4) xyxy input px, clipped; scores (B, Q, num_classes) softmax)."""
        images = _as_batch(images)
        logits, boxes = self.forward_outputs(images)[-1]
        h, w = images.shape[-2:]
        scale = torch.stack([boxes.new_tensor(float(w)), boxes.new_tensor(float(h))]).repeat(2)
        return (box_convert(boxes, "cxcywh", "xyxy") * scale).clamp(min=0).minimum(scale), logits.softmax(-1)

    def forward(self, images: torch.Tensor | list[torch.Tensor], targets: list[dict] | None = None):
        images = _as_batch(images)
        if targets is not None:
            if len(targets) != images.shape[0]:
                raise ValueError(f"got {len(targets)} targets for a batch of {images.shape[0]} images")
            h, w = images.shape[-2:]
            scale = images.new_tensor([w, h, w, h])  # xyxy px -> unit cxcywh
            unit = [{"labels": t["labels"].to(images.device),
                     "boxes": box_convert(t["boxes"].to(images.device, images.dtype) / scale, "xyxy", "cxcywh")}
                    for t in targets]
            outputs, props = self._forward(images)
            if props is None or not self.dense_proposals:
                return self.criterion(([props] if props is not None else []) + outputs[self.aux_start:], unit)
            losses = self.criterion(outputs[self.aux_start:], unit)
            cls, box = dense_proposal_loss(*props, self._centres, unit, self.criterion.class_weight,
                                           self.criterion.weights)
            return {**losses, "classification": losses["classification"] + cls,
                    "bbox_regression": losses["bbox_regression"] + box}
        boxes, scores = self.forward_raw(images)
        if images.is_meta:  # counting params / MACs on the meta device
            return boxes, scores
        return self.postprocess(boxes, scores)

    def postprocess(self, boxes: torch.Tensor, scores: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """The top `detections_per_img` (query, class) pairs of each image by score, no-object excluded; no NMS
        (one-to-one matching trains duplicates away). boxes (B, Q, 4) px, scores (B, Q, num_classes)."""
        results = []
        k_cls = scores.shape[-1] - 1
        for b_img, s_img in zip(boxes, scores):
            flat = s_img[:, 1:].reshape(-1)  # (Q * K,)
            top_s, top_i = flat.topk(min(self.detections_per_img, flat.numel()))
            results.append({"boxes": b_img[top_i // k_cls], "scores": top_s, "labels": top_i % k_cls + 1})
        return results


# --------------------------------------------------------------------------------------------- builders
def detr_backbone(name: str, levels: Sequence[int] = (32, 16, 8), **kwargs: Any) -> FeatureExtractor:
    """Mobile-Former `name` as the maps at `levels` (reductions, any order): (B, 3, H, W) normalised ->
    [maps fine to coarse]. `kwargs` go to `create_model`."""
    family = get_config(name).family
    if family != "mobileformer":
        raise ValueError(f"mobileformer_detr needs a Mobile-Former backbone (mobilevision models 'mobileformer_*'), "
                         f"got {name!r} of family {family!r}")
    fx = create_model(name, num_classes=0, features_only=True, **kwargs)
    have = fx.reductions()
    missing = [r for r in levels if r not in have]
    if missing or len(set(levels)) != len(levels):
        raise ValueError(f"levels {tuple(levels)}: each must be one of {name}'s map reductions {have}, once")
    return fx.select([have.index(r) for r in sorted(levels)])


def build_mobileformer_detr(backbone: str = "mobileformer_508m", num_classes: int = 91, *,
                            levels: Sequence[int] = (32, 16, 8), blocks: Sequence[int] | None = None,
                            image_size: int | tuple[int, int] = (800, 1333), backbone_kwargs: dict | None = None,
                            **kw: Any) -> MobileFormerDETR:
    """`MobileFormerDETR` on Mobile-Former `backbone`; `levels` the reductions the head walks (coarse to fine),
    `blocks` head blocks per level (default two each). `image_size` is the data config's input size (the
    detector takes any size). Other keywords: `MobileFormerDETR`'s."""
    levels = tuple(sorted(levels, reverse=True))
    body = detr_backbone(backbone, levels, **(backbone_kwargs or {}))
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    data_config = resolve_data_config(body, input_size=(3, *size))
    blocks = tuple(blocks) if blocks is not None else (2,) * len(levels)
    return MobileFormerDETR(body, num_classes, data_config, blocks=blocks, **kw)


def mobileformer_detr_preset(num_classes: int = 91, in_chans: int = 3, drop_rate: float = 0.0,
                             drop_path_rate: float = 0.0, backbone: str = "mobileformer_508m",
                             **kw: Any) -> MobileFormerDETR:
    """The registered `mobileformer_detr_<variant>` builder (create_model's arguments); `kw` reach
    `build_mobileformer_detr` (num_queries, blocks, token_dim, ...)."""
    if in_chans != 3:
        raise ValueError(f"mobileformer_detr takes RGB images (in_chans=3), got in_chans={in_chans}")
    bkw = {"drop_path_rate": drop_path_rate} if drop_path_rate else None
    return build_mobileformer_detr(backbone, num_classes, backbone_kwargs=bkw, **kw)
