"""`moga_searched`: a MoGA / MobileNetV3 skeleton whose 14 inverted residuals take searched choices.

The skeleton is MoGA's (stem 16, separable 16, 14 inverted residuals with out channels 24 24 40 40 40 80 80 80
80 112 112 160 160 160, strides 2 1 2 1 1 2 1 1 1 1 1 2 1 1, ReLU up to the 40-channel stage and h-swish after,
conv 960, head 1280); each layer picks (expansion, kernel, SE), the space `mobilevision search` explores.
`create_model("moga_searched", layers=[[t, k, se], ...])` (14 rows) builds it; without `layers` it is
MoGA-C's choices. The rows are saved in the checkpoint's config.json, so the searched model reloads.
"""
from __future__ import annotations

from typing import Sequence

from mobilevision.models.inverted_residual import BlockSpec
from mobilevision.models.mobilenet import MobileNet
from mobilevision.models.moga import MOGA_TABLES, SKELETON, moga_blocks, moga_net, moga_stages
from mobilevision.models.registry import WeightSource, register_variants

KERNELS, EXPANSIONS = (3, 5, 7), (3, 6)


def check_layers(layers: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """14 rows of (expansion t, kernel k, SE 0/1) -> tuples; ValueError naming the bad row."""
    rows = [tuple(int(v) for v in r) for r in layers]
    if len(rows) != len(SKELETON) or any(len(r) != 3 for r in rows):
        raise ValueError(f"moga_searched layers must be {len(SKELETON)} rows of [expansion, kernel, se], got "
                         f"{len(rows)} rows")
    for i, (t, k, se) in enumerate(rows):
        if t < 1 or k < 1 or k % 2 == 0 or se not in (0, 1):
            raise ValueError(f"moga_searched layer {i}: [{t}, {k}, {se}] needs expansion >= 1, an odd kernel "
                             "and se 0/1")
    return rows


def searched_stages(layers: Sequence[Sequence[int]]) -> list[list[BlockSpec]]:
    """The BlockSpec table of the skeleton with these choices (the same table `moga_stages` gives MoGA-A/B/C)."""
    return moga_stages(moga_blocks(check_layers(layers)))


MOGA_C_LAYERS = [[b.t, b.k, int(b.se)] for b in MOGA_TABLES["moga_c"]]


def moga_searched(*, layers: Sequence[Sequence[int]] | None = None, **kwargs) -> MobileNet:
    """The MoGA skeleton with per-layer (expansion, kernel, SE) `layers` (default MoGA-C's)."""
    return moga_net(moga_blocks(check_layers(layers if layers is not None else MOGA_C_LAYERS)), **kwargs)


register_variants("moga_searched", moga_searched, {"moga_searched": dict(kwargs={})}, interpolation="bilinear",
                  weights=WeightSource(note="a searched architecture: train it with `mobilevision train moga_searched "
                                            "--set model_kwargs=...` (`mobilevision search` prints the command)"))
