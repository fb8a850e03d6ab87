"""The model and the pixels an explanation runs on: loaded and preprocessed as `mobilevision predict` / `eval` do
(`deploy.inference.load_classifier`, the checkpoint's `config.json` preprocessing, `create_transform`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from mobilevision.data.config import DataConfig, resolve_data_config


def load_model(name: str, checkpoint: str | os.PathLike | None = None, num_classes: int | None = None) -> nn.Module:
    """A classifier in eval mode: `name` with the weights of `checkpoint` (a file or a `save_pretrained`
    directory, through `load_classifier`), or randomly initialised without one (the CLI warns). ValueError for
    an ONNX graph (the maps are read from the PyTorch modules) or a detector / segmenter preset."""
    from mobilevision.deploy.inference import load_classifier
    from mobilevision.deploy.runtime import is_onnx
    from mobilevision.models.registry import get_config
    from mobilevision.train.recipe import TASK_OF_FAMILY

    family = get_config(name).family  # unknown name -> ValueError with the closest names
    if family in TASK_OF_FAMILY:
        raise ValueError(f"{name!r} is a {TASK_OF_FAMILY[family]} model; explain reads classifier backbones: give "
                         "its backbone's name and a classifier checkpoint")
    if checkpoint is None:
        import mobilevision

        return mobilevision.create_model(name, num_classes=num_classes).eval()
    if is_onnx(checkpoint):
        raise ValueError(f"{checkpoint} is an ONNX graph; explain needs the PyTorch weights (a safetensors file or "
                         "a run's best/ or last/ directory)")
    return load_classifier(name, checkpoint, num_classes=num_classes)


def data_config(model: nn.Module, checkpoint: str | os.PathLike | None = None,
                input_size: tuple[int, int] | None = None) -> DataConfig:
    """The model's preprocessing (from its checkpoint's config.json, as predict resolves it); an FCMAE encoder's
    config stores the registry's input size, so its pre-training resolution (`pretrain.input_size`) is used
    unless `input_size` (H, W) is given."""
    from mobilevision.models.checkpoint import read_config

    if input_size is None and checkpoint is not None:
        pre = (read_config(checkpoint) or {}).get("pretrain") or {}
        if pre.get("input_size"):
            input_size = (int(pre["input_size"]),) * 2
    return resolve_data_config(model, input_size=input_size)


def image_batch(images: Sequence, cfg: DataConfig) -> torch.Tensor:
    """PIL images -> (B, C, H, W), each through the eval transform of `cfg` (`deploy.inference.preprocess`)."""
    from mobilevision.deploy.inference import preprocess

    return torch.stack([preprocess(img, cfg) for img in images])


def read_images(paths: Sequence[str | os.PathLike]) -> list:
    """Decode image files (folders searched recursively) to RGB PIL images; FileNotFoundError / ValueError."""
    from mobilevision.deploy.inference import image_files, load_image

    return [load_image(p) for p in image_files(paths)]


def data_batches(data: str, cfg: DataConfig, num_images: int = 64, batch_size: int = 16):
    """`num_images` images spread evenly over `data` ("digits": its val split; a directory: every image under it,
    sorted), preprocessed with `cfg`, in batches of (b, C, H, W). Returns (list of batches, image count)."""
    from mobilevision.data import open_split
    from mobilevision.deploy.inference import image_files, load_image

    from .collapse import sample_indices

    if num_images < 1 or batch_size < 1:
        raise ValueError(f"num_images and batch_size must be >= 1, got {num_images}, {batch_size}")
    if data == "digits":
        source = open_split("digits", "val", image_size=max(cfg.size))
        idx = sample_indices(len(source), num_images)
        images = [source.load(i)[0] for i in idx]
    else:
        root = Path(data).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"--data {data!r}: not 'digits' and not a directory of images")
        files = image_files([root])
        images = [load_image(files[i]) for i in sample_indices(len(files), num_images)]
    batches = [image_batch(images[i:i + batch_size], cfg) for i in range(0, len(images), batch_size)]
    return batches, len(images)
