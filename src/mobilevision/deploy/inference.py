"""Inference on image files: decoding, the model's eval transform, top-k prediction, and loading a classifier
from a checkpoint (PyTorch weights, or an exported ONNX graph run with onnxruntime)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from mobilevision.data.config import DataConfig, create_transform, resolve_data_config
from mobilevision.data.datasets import IMAGE_EXTENSIONS
from mobilevision.data.datasets import load_image as data_load_image

SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file to RGB (as training does); FileNotFoundError if absent, ValueError if unreadable."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    try:
        return data_load_image(p)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {p}: {type(err).__name__}: {str(err)[:120]}") from None


def image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files named by `paths`: files as given, folders searched recursively (sorted, by extension)."""
    out: list[Path] = []
    for path in paths:
        p = Path(path).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {p}")
            out += found
        else:
            out.append(p)
    return out


def sample_photos(names: Sequence[str] = SAMPLE_PHOTOS) -> dict[str, Image.Image]:
    """Real photos shipped with scikit-image (no download): name -> RGB image."""
    import skimage.data

    return {n: Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in names}


def preprocess(img: Image.Image | np.ndarray, cfg: Any, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Image -> (C, H, W) float with the eval transform of `cfg` (a DataConfig, model or dict), at `size` (H, W)
    if given. The same transform `mobilevision train` evaluates with (`data.config.create_transform`)."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    dc = resolve_data_config(cfg, input_size=size)
    return create_transform(dc)(img.convert("L" if dc.input_size[0] == 1 else "RGB"))


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
def predict(model: nn.Module, images: Sequence[Image.Image], topk: int = 5, labels: Sequence[str] | None = None,
            cfg: DataConfig | dict | None = None, batch_size: int = 32) -> list[list[tuple[str, float]]]:
    """Top-k (label, probability) per image, preprocessed with `cfg` (default: the model's data config).

    `model` is a module or an `OnnxClassifier`: anything mapping (B, C, H, W) to logits (B, classes).
    """
    cfg = resolve_data_config(model if cfg is None else cfg)
    model.eval()
    out: list[list[tuple[str, float]]] = []
    for i in range(0, len(images), batch_size):
        x = torch.stack([preprocess(img, cfg) for img in images[i:i + batch_size]])  # (B, C, H, W)
        probs = model(x).float().softmax(-1)  # (B, num_classes)
        n = probs.shape[-1]
        if labels is not None and len(labels) != n:
            raise ValueError(f"{len(labels)} labels given but the model has {n} classes")
        p, idx = probs.topk(min(topk, n), dim=-1)
        names = list(labels) if labels is not None else [str(j) for j in range(n)]
        out += [[(names[j], float(v)) for v, j in zip(pr.tolist(), ix.tolist())] for pr, ix in zip(p, idx)]
    return out


def load_classifier(name: str | None, checkpoint: str | os.PathLike, num_classes: int | None = None,
                    threads: int = 0):
    """A classifier ready for inference from `checkpoint`: an `.onnx` graph (FP32 or INT8) runs through
    onnxruntime (`OnnxClassifier`); anything else builds `name` with `create_model` (eval mode).

    For a graph, `name` may be None; if given it must match the name stored in the graph.
    """
    from .runtime import OnnxClassifier, is_onnx

    if not Path(checkpoint).expanduser().exists():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    if is_onnx(checkpoint):
        runner = OnnxClassifier(checkpoint, threads=threads)
        if name and runner.model_name and name != runner.model_name:
            raise ValueError(f"{checkpoint} was exported from model {runner.model_name!r}, not {name!r}")
        if num_classes is not None and runner.num_classes is not None and num_classes != runner.num_classes:
            raise ValueError(f"{checkpoint} has {runner.num_classes} classes; an ONNX graph's head cannot be "
                             f"replaced (--num-classes {num_classes})")
        return runner
    if not name:
        raise ValueError("give the model name (NAME or --model NAME) for a PyTorch checkpoint")
    import mobilevision

    return mobilevision.create_model(name, checkpoint_path=checkpoint, num_classes=num_classes).eval()
