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
    from .plotting import new_figure, overlay, save_figure

    n_stages = len(stage_titles)
    fig, axes = new_figure(len(images), n_stages + 1, cell=1.7, title=title)
    for i, img in enumerate(images):
        ax = axes[i][0]
        ax.imshow(img, extent=(0, img.shape[1], img.shape[0], 0))
        ax.set_xticks([0, img.shape[1]])
        ax.set_yticks([0, img.shape[0]])
        ax.tick_params(labelsize=6)
        if i == 0:
            ax.set_title("input (px)", fontsize=8)
        if row_titles:
            ax.set_ylabel(row_titles[i], fontsize=8)
        for s in range(n_stages):
            heat = maps[i][s]
            ax = axes[i][s + 1]
            im = overlay(ax, img, heat, vmin=float(heat.min()), vmax=float(heat.max()), cmap="inferno", alpha=0.75)
            cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
            cb.ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(stage_titles[s], fontsize=8)
    save_figure(fig, path)
