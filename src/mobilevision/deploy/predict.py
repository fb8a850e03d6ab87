"""Eval preprocessing from a model's saved config, sample photos, and top-k prediction."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from mobilevision.data.datasets import load_image as data_load_image
from mobilevision.data.transforms import eval_transform

SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file to RGB (as training does); FileNotFoundError if absent, ValueError if unreadable."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    try:
        return data_load_image(p)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {p}: {type(err).__name__}: {str(err)[:120]}") from None


def sample_photos(names: Sequence[str] = SAMPLE_PHOTOS) -> dict[str, Image.Image]:
    """Real photos shipped with scikit-image (no download): name -> RGB image."""
    import skimage.data

    return {n: Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in names}


def preprocess(img: Image.Image | np.ndarray, cfg: dict, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The eval transform of `cfg` (input_size, crop_pct, interpolation, mean, std): image -> (C, H, W) float.

    The same transform `mobilevision train` evaluates with: shorter side resized to size / crop_pct,
    centre crop, scaled to [0, 1], normalised. `size` (H, W) overrides cfg's input size.
    """
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    c, h, w = cfg.get("input_size", (3, 224, 224))
    if size is not None:
        h, w = size
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))[:c]
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))[:c]
    tf = eval_transform((int(h), int(w)), mean, std, crop_pct=float(cfg.get("crop_pct") or 1.0),
                        interpolation=str(cfg.get("interpolation", "bicubic")))
    return tf(img.convert("L" if c == 1 else "RGB"))


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a text file (one per line) or a JSON list."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"labels file not found: {p}")
    text = p.read_text()
    if p.suffix == ".json":
        labels = json.loads(text)
        if not isinstance(labels, list):
            raise ValueError(f"labels file {p} must hold a JSON list of names")
        return [str(s) for s in labels]
    return [line.strip() for line in text.splitlines() if line.strip()]


@torch.no_grad()
def predict(model: nn.Module, images: Sequence[Image.Image], topk: int = 5,
            labels: Sequence[str] | None = None, cfg: dict | None = None) -> list[list[tuple[str, float]]]:
    """Top-k (label, probability) per image, preprocessed with `cfg` (default: the model's `default_cfg`)."""
    cfg = cfg or getattr(model, "default_cfg", {})
    model.eval()
    x = torch.stack([preprocess(img, cfg) for img in images])  # (B, C, H, W)
    probs = model(x).softmax(-1)  # (B, num_classes)
    n = probs.shape[-1]
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels given but the model has {n} classes")
    k = min(topk, n)
    p, idx = probs.topk(k, dim=-1)
    names = list(labels) if labels is not None else [str(i) for i in range(n)]
    return [[(names[i], float(v)) for v, i in zip(pr.tolist(), ix.tolist())] for pr, ix in zip(p, idx)]
