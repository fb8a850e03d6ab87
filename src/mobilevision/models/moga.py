"""MoGA-A/B/C ("MoGA: Searching Beyond MobileNetV3", arXiv 1908.01314) as xiaomi-automl/MoGA's code builds them.

Stem conv 3x3/2 16 -> BN -> h-swish; a depthwise-separable 16 -> 16 (ReLU, no shortcut); 14 inverted
residuals (hidden = round(in * t), no make_divisible; SE of width hidden // 4 with the block's own
activation and an h-sigmoid gate); conv 1x1 160 -> 960 -> BN -> h-swish; pool; conv 1x1 960 -> 1280 without
bias -> h-swish; dropout (the official code uses Dropout2d(0.2)); Linear.

MoGA-A follows the code (`models/MoGA_A.py`), which puts SE on block 6 rather than block 3 as the paper's
Figure 8 draws it; the code is what loads the released checkpoint. Layout is this library's (= timm's
MobileNetV3 names); `checkpoint_filter` maps the official key names in.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch

from mobilevision.layers.helpers import check_choice
from mobilevision.models.checkpoint import rename_prefix
from mobilevision.models.inverted_residual import BlockSpec, SERule
from mobilevision.models.mobilenet import HeadSpec, MobileNet
from mobilevision.models.registry import WeightSource, register_variants


@dataclass(frozen=True)
class MoGABlock:
    """A row of the official `mb_config`: expansion t, out channels, kernel, stride, act, SE."""

    t: int
    c: int
    k: int
    s: int
    act: str
    se: bool


_RE, _HS = "relu", "hard_swish"
# The skeleton MoGA's search fixes (and `moga_searched` keeps): (out channels, stride, act) of the 14 inverted
# residuals, ReLU up to the 40-channel stage and h-swish after.
SKELETON: tuple[tuple[int, int, str], ...] = tuple((c, s, _HS if c >= 80 else _RE) for c, s in (
    (24, 2), (24, 1), (40, 2), (40, 1), (40, 1), (80, 2), (80, 1), (80, 1), (80, 1), (112, 1), (112, 1), (160, 2),
    (160, 1), (160, 1)))
# The searched choices, block by block: "<t>k<k>" = expansion t, kernel k; "+" = SE (paper Table 3 / Figure 8
# and the official mb_config).
_CHOICES = {
    "moga_a": "6k5 6k7 6k3 6k3+ 3k3+ 6k3+ 6k3 6k7 3k7+ 6k7 6k3 6k3 6k5+ 6k5+",
    "moga_b": "3k3 3k3 6k7 3k3 6k5 6k3+ 6k5+ 3k3 6k7+ 6k7 3k5 6k7+ 6k7+ 6k3+",
    "moga_c": "3k5 3k3 3k5 3k3 3k5 3k5 6k5+ 3k5 3k5 6k3 6k3+ 6k3+ 6k3+ 6k3+",
}


def moga_blocks(layers: Sequence[Sequence[int]]) -> tuple[MoGABlock, ...]:
    """14 (expansion t, kernel k, SE 0/1) choices on the skeleton -> the blocks."""
    return tuple(MoGABlock(t, c, k, s, act, bool(se)) for (t, k, se), (c, s, act) in zip(layers, SKELETON))


MOGA_TABLES: dict[str, tuple[MoGABlock, ...]] = {
    name: moga_blocks([(int(b[0]), int(b[2]), b.endswith("+")) for b in text.split()])
    for name, text in _CHOICES.items()
}
STEM, SEPARABLE, LAST_CONV, HEAD = 16, 16, 960, 1280


def moga_stages(rows: tuple[MoGABlock, ...]) -> list[list[BlockSpec]]:
    """Official rows -> stages: the separable conv, then one stage per output width, then the 960 conv."""
    stages: list[list[BlockSpec]] = [[BlockSpec("ds", 3, 1, SEPARABLE, act=_RE, skip=False)]]
    prev_c = None
    for r in rows:
        spec = BlockSpec("ir", r.k, r.s, r.c, exp=r.t, act=r.act, se=0.25 if r.se else 0.0)
        if r.c != prev_c:
            stages.append([])
        stages[-1].append(spec)
        prev_c = r.c
    stages.append([BlockSpec("cn", 1, 1, LAST_CONV, act=_HS)])
    return stages


def moga_net(rows: tuple[MoGABlock, ...], **kwargs) -> MobileNet:
    """MoGA's network on `rows`: hidden widths exact (divisor 1), SE hidden // 4 with the block's act, h-sigmoid."""
    return MobileNet(moga_stages(rows), stem_chs=STEM, head=HeadSpec("post_pool", HEAD, bias=False), act=_HS,
                     se_rule=SERule("floor", act=None, gate="hard_sigmoid"), hidden_divisor=1, **kwargs)


def moga(*, variant: str = "moga_a", **kwargs) -> MobileNet:
    """MoGA-A/B/C."""
    check_choice(variant, sorted(MOGA_TABLES), "MoGA variant")
    return moga_net(MOGA_TABLES[variant], **kwargs)


# Official module -> ours. `mb_module.<i>` is the i-th inverted residual, counted over our stages 1..n-2.
_OFFICIAL_FIXED = {
    "stem.0": "conv_stem", "stem.1": "bn1", "conv_head.0": "conv_head",
    "separable_conv.0": "blocks.0.0.conv_dw", "separable_conv.1": "blocks.0.0.bn1",
    "separable_conv.3": "blocks.0.0.conv_pw", "separable_conv.4": "blocks.0.0.bn2",
}
_OFFICIAL_BLOCK = {
    "conv1": "conv_pw", "bn1": "bn1", "conv2": "conv_dw", "bn2": "bn2",
    "mid_se.conv.0": "se.conv_reduce", "mid_se.fc.0": "se.conv_expand", "conv3": "conv_pwl", "bn3": "bn3",
}
_MB_KEY = re.compile(r"^mb_module\.(\d+)\.(.+)$")


def checkpoint_filter(state_dict: dict[str, torch.Tensor], model: MobileNet) -> dict[str, torch.Tensor]:
    """Map a state dict in the official xiaomi-automl/MoGA layout to ours; ours passes through unchanged.

    Keys that match no rule are kept as they are, so the loader reports them as unexpected.
    """
    if not any(k.startswith(("mb_module.", "stem.0.", "separable_conv.")) for k in state_dict):
        return state_dict
    n_stages = len(model.blocks)
    last = f"blocks.{n_stages - 1}.0."
    fixed = {**_OFFICIAL_FIXED, "conv_before_pooling.0": last + "conv", "conv_before_pooling.1": last + "bn1"}
    where = [(s, j) for s in range(1, n_stages - 1) for j in range(len(model.blocks[s]))]
    out = {}
    for key, value in state_dict.items():
        m = _MB_KEY.match(key)
        if m is not None and int(m.group(1)) < len(where):
            s, j = where[int(m.group(1))]
            new = rename_prefix(m.group(2), _OFFICIAL_BLOCK, f"blocks.{s}.{j}.")
        else:
            new = rename_prefix(key, fixed)
        out[new or key] = value
    return out


_GATED = ("MoGA weights are not public files: the official README gives them on request through a "
          "questionnaire. Load a copy with checkpoint_path=PATH (official layout is remapped).")

# The repo's eval preprocessing (dataloader.py) is not published; resize-256 / center-crop-224 bilinear with
# ImageNet mean/std is the standard torchvision evaluation the paper's era used.
register_variants("moga", moga, {name: dict(kwargs=dict(variant=name)) for name in MOGA_TABLES},
                  interpolation="bilinear", weights=WeightSource(note=_GATED), checkpoint_filter=checkpoint_filter)
