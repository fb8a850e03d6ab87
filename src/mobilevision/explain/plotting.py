"""Figure helpers shared by the explain plots: matplotlib's object API only (no pyplot state, no GUI backend)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def new_figure(rows: int, cols: int, cell: float = 1.4, title: str = ""):
    """A Figure with a (rows, cols) grid of image axes (a list of lists), `cell` inches per cell."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(cols * cell + 1.6, rows * cell + 0.9), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig, [list(r) for r in grid]


def overlay(ax, image: np.ndarray, heat: np.ndarray, *, vmin: float | None = None, vmax: float | None = None,
            cmap: str = "inferno", alpha: float = 0.65, ticks: bool = False):
    """Draw `image` (H, W, 3) in [0, 1] in grey with `heat` (h, w), stretched over it, on top. Returns the
    heat map's AxesImage (for a colour bar). Pixel ticks only with `ticks`."""
    h, w = image.shape[:2]
    ax.imshow(image.mean(-1), cmap="gray", vmin=0.0, vmax=1.0, extent=(0, w, h, 0))
    im = ax.imshow(heat, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha, extent=(0, w, h, 0),
                   interpolation="nearest")
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])
    return im


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write the figure as PNG (parent folders made); returns the path."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi)
    return p


def display_image(x, cfg) -> np.ndarray:
    """A preprocessed image tensor (C, H, W), normalized with `cfg` (a DataConfig), back to (H, W, 3) in
    [0, 1]: exactly the pixels the model saw (after resize and crop), for drawing maps over."""
    mean, std = cfg.channel_stats
    arr = x.detach().float().cpu().numpy()
    arr = arr * np.asarray(std, dtype=np.float32)[:, None, None] + np.asarray(mean, dtype=np.float32)[:, None, None]
    arr = np.clip(arr.transpose(1, 2, 0), 0.0, 1.0)
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[..., :3]
