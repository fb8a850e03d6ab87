"""Feature-collapse analysis of ConvNeXt V2 (Woo et al., CVPR 2023, Sec. 3.2, Fig. 3), for any checkpoint.

For an activation X (C, H, W) of one image, X_i is channel i flattened to an H*W vector and the statistic is
the average pairwise cosine distance over all channel pairs (the diagonal included, as in the paper):

    d(X) = 1 / C^2 * sum_i sum_j (1 - cos(X_i, X_j)) / 2          in [0, 1]

Near 0: the channels are copies of one another (collapsed); 0.5: on average orthogonal. It is averaged over a
sample of images, per block. The paper's claim: FCMAE-pre-trained ConvNeXt V1 (no GRN) collapses (low distance)
in its dimension-expansion MLP layers, V2 with GRN keeps the channels diverse (higher distance).

Taps (`features`): "output" is each block's output map (ConvNeXt: every `ConvNeXtBlock`; other families: each
`feature_info` stage end); "mlp" is the dimension-expansion features inside each ConvNeXt block (the input of
the second 1x1 layer, after GELU and GRN), the layers the paper plots.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from mobilevision.deploy.profiling import eval_pass
from mobilevision.models.convnext import ConvNeXtBlock

FEATURES = ("output", "mlp")


def channel_cosine_distance(features: torch.Tensor, channels_last: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """d(X) above for each image: features (B, C, H, W), or (B, H, W, C) with `channels_last` -> (B,).

    Computed in O(C * H * W) as (1 - |sum_i X_i / |X_i||^2 / C^2) / 2, in float64. A channel that is zero
    everywhere has no direction and counts as orthogonal to every channel, itself included.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, H, W) (or (B, H, W, C)), got shape {tuple(features.shape)}")
    x = features.detach().double()
    if channels_last:
        x = x.permute(0, 3, 1, 2)
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)  # (B, C, HW)
    unit = flat / flat.norm(dim=-1, keepdim=True).clamp_min(eps)
    total = unit.sum(dim=1)  # (B, HW): the sum of all unit channel vectors
    mean_cos = (total * total).sum(dim=-1) / (c * c)  # (1/C^2) sum_ij cos(X_i, X_j)
    return ((1.0 - mean_cos) / 2.0).float()


@dataclass
class Tap:
    """Where a statistic is read: a module's output ("output") or the input of a ConvNeXt block's second MLP
    layer ("mlp", channels-last)."""

    name: str
    module: nn.Module
    where: str


def collapse_taps(model: nn.Module, features: str = "output") -> list[Tap]:
    """The tap points of `model` in forward order (see the module docstring). ValueError for an unknown
    `features` or "mlp" on a model without ConvNeXt blocks."""
    if features not in FEATURES:
        raise ValueError(f"features {features!r} is not one of {', '.join(FEATURES)}")
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, ConvNeXtBlock)]
    if features == "mlp":
        if not blocks:
            raise ValueError(f"features 'mlp' reads ConvNeXt blocks' expansion layers; {type(model).__name__} has "
                             "none (use features 'output')")
        return [Tap(n, m.mlp.fc2, "mlp") for n, m in blocks]
    if blocks:
        return [Tap(n, m, "output") for n, m in blocks]
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"{type(model).__name__} has neither ConvNeXt blocks nor feature_info stages to read")
    try:
        return [Tap(e["module"], model.get_submodule(e["module"]), "output") for e in info]
    except AttributeError as err:
        raise ValueError(f"{type(model).__name__}: a feature_info module is missing ({err})") from None


@dataclass
class CollapseResult:
    """Per-image statistics of one model: `values` (N images, L taps); names of the L taps in forward order."""

    names: list[str]
    values: np.ndarray
    features: str = "output"

    @property
    def mean(self) -> np.ndarray:
        """(L,) the average over images."""
        return self.values.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        """(L,) the standard deviation over images."""
        return self.values.std(axis=0)


def feature_collapse(model: nn.Module, batches: Iterable[torch.Tensor], features: str = "output") -> CollapseResult:
    """d(X) at every tap of `model` (eval mode) for each image of `batches` (each (B, C, H, W), preprocessed)."""
    taps = collapse_taps(model, features)
    current: list[torch.Tensor | None] = [None] * len(taps)
    handles = []
    for k, tap in enumerate(taps):
        if tap.where == "mlp":
            def pre_hook(mod, inputs, k=k):
                current[k] = channel_cosine_distance(inputs[0], channels_last=True)
            handles.append(tap.module.register_forward_pre_hook(pre_hook))
        else:
            def hook(mod, inputs, output, k=k):
                out = output[0] if isinstance(output, (tuple, list)) else output  # Mobile-Former: (map, tokens)
                current[k] = channel_cosine_distance(out)
            handles.append(tap.module.register_forward_hook(hook))
    rows = []
    with eval_pass(model, handles):
        for x in batches:
            current[:] = [None] * len(taps)
            model(x)
            missing = [taps[k].name for k, v in enumerate(current) if v is None]
            if missing:
                raise ValueError(f"the forward pass did not run {missing[:3]}")
            rows.append(torch.stack(current, dim=1))  # (B, L)
    if not rows:
        raise ValueError("no images to analyse")
    return CollapseResult([t.name for t in taps], torch.cat(rows).numpy(), features)


def sample_indices(total: int, n: int) -> list[int]:
    """`n` indices spread evenly over range(total) (all of them if n >= total), deterministic."""
    if total < 1:
        raise ValueError("the data holds no images")
    if n >= total:
        return list(range(total))
    return sorted({int(round(v)) for v in np.linspace(0, total - 1, n)})


def _stage_of(name: str) -> str | None:
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and parts[0] == "stages" else None


def plot_collapse(results: Sequence[tuple[str, CollapseResult]], path, title: str = "") -> None:
    """Mean d(X) (+- one std over images, shaded) against depth, one line per (label, result), on one PNG.
    x is the tap index when every result has the same taps (stage boundaries dotted), else the relative depth."""
    from .plotting import save_figure
    from matplotlib.figure import Figure

    same = len({tuple(r.names) for _, r in results}) == 1
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.subplots()
    for label, res in results:
        n = len(res.names)
        x = np.arange(1, n + 1) if same else np.arange(1, n + 1) / n
        ax.plot(x, res.mean, marker="o", markersize=3, label=label)
        ax.fill_between(x, res.mean - res.std, res.mean + res.std, alpha=0.15)
    first = results[0][1]
    if same:
        stages = [_stage_of(n) for n in first.names]
        for i in range(1, len(stages)):
            if stages[i] is not None and stages[i] != stages[i - 1]:
                ax.axvline(i + 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel(("block" if first.features == "mlp" or _stage_of(first.names[0]) else "stage")
                      + " (in forward order; dotted: stage boundary)")
        ax.set_xticks(np.arange(1, len(first.names) + 1))
    else:
        ax.set_xlabel("relative depth (tap index / number of taps)")
    what = "MLP expansion features" if first.features == "mlp" else "output maps"
    ax.set_ylabel(f"avg. pairwise cosine distance\nbetween channels ({what})")
    lo = min(float(np.min(r.mean - r.std)) for _, r in results)
    hi = max(float(np.max(r.mean + r.std)) for _, r in results)
    ax.set_ylim(max(0.0, math.floor(lo * 20) / 20), min(1.0, math.ceil(hi * 20) / 20 + 1e-9))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Feature collapse: higher = more diverse channels", fontsize=10)
    save_figure(fig, path)


def collapse_rows(label: str, res: CollapseResult, meta: dict | None = None) -> list[dict]:
    """CSV rows (one per tap) of one result: label, the `meta` fields, index, tap name, relative depth,
    mean / std over images and the image count."""
    n = len(res.names)
    return [{"label": label, **(meta or {}), "features": res.features, "index": i + 1, "module": name,
             "relative_depth": round((i + 1) / n, 6), "cosine_distance_mean": round(float(res.mean[i]), 6),
             "cosine_distance_std": round(float(res.std[i]), 6), "images": int(res.values.shape[0])}
            for i, name in enumerate(res.names)]
