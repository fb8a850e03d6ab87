"""Figure helpers shared by the explain plots: matplotlib's object API only (no pyplot state, no GUI backend)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write the figure as PNG, atomically (parent folders made); returns the path."""
    from mobilevision.models.checkpoint import atomic_write_bytes

    p = Path(path).expanduser()
    atomic_write_bytes(p, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    return p


def display_image(x, cfg) -> np.ndarray:
    """A preprocessed image tensor (C, H, W), normalized with `cfg` (a DataConfig), back to (H, W, 3) in
    [0, 1]: exactly the pixels the model saw (after resize and crop), for drawing maps over."""
    mean, std = cfg.channel_stats
    arr = x.detach().float().cpu().numpy()
    arr = arr * np.asarray(std, dtype=np.float32)[:, None, None] + np.asarray(mean, dtype=np.float32)[:, None, None]
    arr = np.clip(arr.transpose(1, 2, 0), 0.0, 1.0)
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[..., :3]


def blend(image: np.ndarray, heat: np.ndarray, vmin: float, vmax: float, cmap: str, alpha: float = 0.65) -> np.ndarray:
    """`heat` (h, w) coloured with `cmap` on [vmin, vmax], stretched (nearest) to `image` (H, W, 3) in [0, 1] and
    laid over its grey version with opacity `alpha` -> (H, W, 3) in [0, 1]."""
    from matplotlib import colormaps

    big_h, big_w = image.shape[:2]
    rows = np.minimum(np.arange(big_h) * heat.shape[0] // big_h, heat.shape[0] - 1)
    cols = np.minimum(np.arange(big_w) * heat.shape[1] // big_w, heat.shape[1] - 1)
    scaled = (heat[rows][:, cols] - vmin) / max(vmax - vmin, 1e-12)
    colour = colormaps[cmap](np.clip(scaled, 0.0, 1.0))[..., :3]
    grey = np.repeat(image.mean(-1, keepdims=True), 3, axis=-1)
    return (1 - alpha) * grey + alpha * colour


def mosaic(cells: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Equal-sized (H, W, 3) cells, a list of rows, tiled with `gap` white pixels between them -> one RGB array,
    drawn with a single imshow (a grid of many axes takes seconds to lay out)."""
    h, w = cells[0][0].shape[:2]
    n_rows, n_cols = len(cells), len(cells[0])
    out = np.ones((n_rows * (h + gap) - gap, n_cols * (w + gap) - gap, 3))
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = cell
    return out
