"""Mean activation map of each stage: the check users make on a backbone before putting a detector on it."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def stage_activation_maps(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The channel mean of each `feature_info` stage's map: x (B, C, H, W) preprocessed -> a list of
    (B, H / r_i, W / r_i), one per stage (the model's `forward_stages`). ValueError for a model without stages."""
    if not callable(getattr(model, "forward_stages", None)) or not getattr(model, "feature_info", None):
        raise ValueError(f"{type(model).__name__} has no stages to show (no forward_stages / feature_info): "
                         "give a registered backbone")
    model.eval()
    maps = model.forward_stages(x)
    return [m.float().mean(dim=1) for m in maps]


def plot_activations(maps: Sequence[np.ndarray], images: Sequence[np.ndarray], stage_titles: Sequence[str], path,
                     row_titles: Sequence[str] = (), title: str = "") -> None:
    """One PNG: a row per image, the image itself then each stage's mean map over it, each cell with its own
    colour bar (stages differ in scale). `maps[i][s]` is image i's stage-s map (h, w); images (H, W, 3) in [0, 1]."""
    from matplotlib.figure import Figure

    from .plotting import save_figure

    n_stages, cell = len(stage_titles), 1.7
    fig = Figure(figsize=((n_stages + 1) * cell + 1.6, len(images) * cell + 0.9), layout="constrained")
    axes = fig.subplots(len(images), n_stages + 1, squeeze=False)
    if title:
        fig.suptitle(title, fontsize=10)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        ax = axes[i][0]
        ax.imshow(img, extent=(0, w, h, 0))
        ax.set_xticks([0, w])
        ax.set_yticks([0, h])
        ax.tick_params(labelsize=6)
        if i == 0:
            ax.set_title("input (px)", fontsize=8)
        if row_titles:
            ax.set_ylabel(row_titles[i], fontsize=8)
        for s in range(n_stages):
            heat = maps[i][s]
            ax = axes[i][s + 1]
            # the image in grey, the map stretched over it
            ax.imshow(img.mean(-1), cmap="gray", vmin=0.0, vmax=1.0, extent=(0, w, h, 0))
            im = ax.imshow(heat, cmap="inferno", vmin=float(heat.min()), vmax=float(heat.max()), alpha=0.75,
                           extent=(0, w, h, 0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
            cb.ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(stage_titles[s], fontsize=8)
    save_figure(fig, path)
