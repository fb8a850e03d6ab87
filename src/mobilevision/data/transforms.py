"""Train and eval presets on `torchvision.transforms.v2`; RandAugment from timm (the papers' policy)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

_PIL_FILTER = {"bilinear": 2, "bicubic": 3, "nearest": 0}  # PIL.Image.Resampling values (timm works on PIL)


def interpolation_mode(name: str) -> InterpolationMode:
    if name not in _PIL_FILTER:
        raise ValueError(f"interpolation {name!r} is not one of {', '.join(_PIL_FILTER)}")
    return InterpolationMode(name)


def train_transform(
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    interpolation: str = "bilinear",
    rand_augment: str | None = None,
    auto_augment: str | None = None,
    color_jitter: float = 0.0,
    random_erase: float = 0.0,
) -> v2.Compose:
    """PIL RGB image -> normalised float tensor (3, H, W).

    RandomResizedCrop + flip, then (optionally) timm's RandAugment string policy such as
    'rand-m9-mstd0.5-inc1' (on PIL, as in the papers) or torchvision's AutoAugment, colour jitter, and pixel-mode
    RandomErasing.
    """
    ops: list = [v2.RandomResizedCrop(tuple(size), scale=tuple(scale), ratio=tuple(ratio),
                                      interpolation=interpolation_mode(interpolation), antialias=True)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    if rand_augment:
        from timm.data import rand_augment_transform

        if not rand_augment.startswith("rand"):
            raise ValueError(f"rand_augment {rand_augment!r} must be a timm RandAugment string like "
                             "'rand-m9-mstd0.5-inc1'")
        hparams = {
            "translate_const": int(min(size) * 0.45),
            "img_mean": tuple(round(255 * m) for m in mean),
            "interpolation": _PIL_FILTER[interpolation],
        }
        ops.append(_ToPIL())
        ra = rand_augment_transform(rand_augment, hparams)
        for op in ra.ops:
            if getattr(op, "name", "").startswith("Posterize"):
                op.aug_fn = _posterize
        ops.append(ra)
    if auto_augment:
        if auto_augment not in ("imagenet", "cifar10", "svhn"):  # the v2.AutoAugmentPolicy values
            raise ValueError(f"auto_augment {auto_augment!r} is not one of imagenet, cifar10, svhn")
        policy = v2.AutoAugmentPolicy(auto_augment)
        ops.append(v2.AutoAugment(policy, interpolation=interpolation_mode(interpolation)))
    if color_jitter > 0:
        ops.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    ops += _to_normalised_tensor(mean, std)
    if random_erase > 0:
        # 'pixel' mode as in timm: erased pixels are normal noise in the normalised space
        ops.append(v2.RandomErasing(p=random_erase, value="random"))
    return v2.Compose(ops)


def eval_transform(
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
) -> v2.Compose:
    """Resize the short side to size / crop_pct, center-crop `size`, normalise: (3, H, W)."""
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    resize = math.floor(min(size) / crop_pct)
    return v2.Compose([v2.Resize(resize, interpolation=interpolation_mode(interpolation), antialias=True),
                       v2.CenterCrop(tuple(size)), *_to_normalised_tensor(mean, std)])


def _to_normalised_tensor(mean: Sequence[float], std: Sequence[float]) -> list:
    """PIL image -> float tensor (C, H, W) in [0, 1] -> (x - mean) / std."""
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def _posterize(img, bits_to_keep, **_):
    """timm's posterize, keeping Pillow < 11's meaning of 0 bits (a black image): 'inc1' policies with
    magnitude noise reach level 10 -> 0 bits, which Pillow >= 11 rejects."""
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


class _ToPIL(torch.nn.Module):
    """timm's RandAugment works on PIL images; pass PIL through unchanged."""

    def forward(self, img):
        from PIL import Image

        return img if isinstance(img, Image.Image) else v2.functional.to_pil_image(img)
