"""EfficientNet B0-B7 (Tan & Le, arXiv 1905.11946): the B0 table of paper Table 1, compound-scaled.

Each variant is B0 with every width times `width` (make_divisible(., 8): stem, stage outputs, head),
every stage's repeats times `depth` (rounded up), fed at `resolution`; `dropout` is the rate the paper
trained with (kept as `model.recipe_drop_rate`; `create_model(drop_rate=...)` sets the one used).
Blocks are MBConv (inverted residual) with SE of width int(block_in / 4), swish inside the SE and a
sigmoid gate. Layout is timm's (`conv_stem`, `bn1`, `blocks.i.j`, `conv_head`, `bn2`, `classifier`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

from mobilevision.layers.helpers import make_divisible
from mobilevision.models.inverted_residual import BlockSpec, SERule
from mobilevision.models.mobilenet import HeadSpec, MobileNet
from mobilevision.models.registry import INCEPTION_MEAN, INCEPTION_STD, WeightSource, register_variants


# EfficientNet-B0, paper Table 1 (stage 1 is the 3x3 stem conv, stage 9 the head): rows (MBConv expansion t,
# kernel k, stride s, out channels c, layers n).
B0_STEM, B0_HEAD = 32, 1280
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
SE_RATIO = 0.25


class Scaling(NamedTuple):
    """One variant: compound-scaling coefficients (TF `efficientnet_params`), then timm's default pretrained cfg
    of the same name (what its default weights were evaluated with)."""

    width: float
    depth: float
    resolution: int
    dropout: float
    hf_hub_id: str | None
    crop_pct: float
    inception_norm: bool = False


SCALING: dict[str, Scaling] = {
    "efficientnet_b0": Scaling(1.0, 1.0, 224, 0.2, "timm/efficientnet_b0.ra_in1k", 0.875),
    "efficientnet_b1": Scaling(1.0, 1.1, 240, 0.2, "timm/efficientnet_b1.ra4_e3600_r240_in1k", 0.9, True),
    "efficientnet_b2": Scaling(1.1, 1.2, 260, 0.3, "timm/efficientnet_b2.ra_in1k", 0.875),
    "efficientnet_b3": Scaling(1.2, 1.4, 300, 0.3, "timm/efficientnet_b3.ra2_in1k", 0.875),
    "efficientnet_b4": Scaling(1.4, 1.8, 380, 0.4, "timm/efficientnet_b4.ra2_in1k", 0.875),
    "efficientnet_b5": Scaling(1.6, 2.2, 456, 0.4, "timm/efficientnet_b5.sw_in12k_ft_in1k", 1.0),
    "efficientnet_b6": Scaling(1.8, 2.6, 528, 0.5, None, 0.942),
    "efficientnet_b7": Scaling(2.0, 3.1, 600, 0.5, None, 0.949),
}


def scaled_stages(width: float, depth: float) -> list[list[BlockSpec]]:
    """B0's stages with widths make_divisible(c * width, 8) and repeats ceil(n * depth)."""
    return [[BlockSpec("ds" if t == 1 else "ir", k, s, make_divisible(c * width), exp=t, se=SE_RATIO,
                       repeats=int(math.ceil(n * depth)))] for t, k, s, c, n in B0_STAGES]


def efficientnet(*, width: float = 1.0, depth: float = 1.0, recipe_drop_rate: float = 0.2, **kwargs) -> MobileNet:
    """EfficientNet at compound coefficients (width, depth); swish everywhere, BN eps 1e-5 (PyTorch)."""
    model = MobileNet(
        scaled_stages(width, depth),
        stem_chs=make_divisible(B0_STEM * width),
        head=HeadSpec("pre_pool", make_divisible(B0_HEAD * width)),
        act="silu",
        se_rule=SERule("block_in", act=None, gate="sigmoid"),
        **kwargs,
    )
    model.recipe_drop_rate = recipe_drop_rate
    return model


def _record(name: str, sc: Scaling) -> dict:
    weights = WeightSource(hf_hub_id=sc.hf_hub_id) if sc.hf_hub_id else WeightSource(
        note=f"timm registers {name} without trained weights (its tf_{name} ports use TF padding)")
    norm = dict(mean=INCEPTION_MEAN, std=INCEPTION_STD) if sc.inception_norm else {}
    return dict(kwargs=dict(width=sc.width, depth=sc.depth, recipe_drop_rate=sc.dropout),
                input_size=(3, sc.resolution, sc.resolution), crop_pct=sc.crop_pct, weights=weights, **norm)


register_variants("efficientnet", efficientnet, {n: _record(n, sc) for n, sc in SCALING.items()})
