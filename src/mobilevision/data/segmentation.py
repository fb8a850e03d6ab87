"""Segmentation data: VOC-style folders, `images/` + `masks/` pairs, the built-in `digits-segment` set, and
mask-aware transforms (`torchvision.transforms.v2` with `tv_tensors.Mask`; nearest resampling for masks).

Sources give `(PIL RGB image, (H, W) uint8 mask)` through `load(i)`; `SegmentationView` applies a transform and
returns `(image (3, h, w) float normalised, mask (h, w) int64)`. Label 255 is "ignore" everywhere. Broken
pairs (missing mask, mask size != image size, labels outside 0..num_classes-1 other than 255, unreadable
files) are found once when a folder is opened, skipped and counted in `source.skipped` (reason -> count).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .datasets import IMAGE_EXTENSIONS, EvalView, load_image

IGNORE_INDEX = 255
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
DIGITS_SEGMENT_CLASSES = ("background",) + tuple(str(d) for d in range(10))
_MAX_WARNINGS = 10


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """A label mask as (H, W) uint8: palette PNGs give their indices (VOC), grey images their values."""
    with Image.open(path) as m:
        m.load()
        if m.mode not in ("P", "L", "I", "I;16", "1"):
            raise ValueError(f"mask {path} has mode {m.mode}; masks are palette or greyscale label images")
        arr = np.asarray(m)
    if arr.dtype != np.uint8:
        if arr.max(initial=0) > 255:
            raise ValueError(f"mask {path} holds labels above 255")
        arr = arr.astype(np.uint8)
    return arr


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map: 256 entries as a flat [r, g, b, ...] list (the bit-interleaved VOC scheme)."""
    pal = []
    for i in range(256):
        rgb = [0, 0, 0]
        for j in range(8):  # bit 3j + k of the index is bit 7 - j of channel k
            for k in range(3):
                rgb[k] |= ((i >> (3 * j + k)) & 1) << (7 - j)
        pal += rgb
    return pal


def save_mask(mask: np.ndarray, path: str | os.PathLike) -> None:
    """Write an (H, W) label mask as a VOC-palette PNG."""
    img = Image.fromarray(np.asarray(mask, np.uint8), "P")
    img.putpalette(voc_palette())
    img.save(path)


def overlay_mask(image: Image.Image, mask: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image with the mask's VOC colours blended in (background 0 and ignore 255 left as they are)."""
    rgb = np.asarray(image.convert("RGB"), np.float32)
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"mask {mask.shape} and image {rgb.shape[:2]} differ in size")
    colours = np.asarray(voc_palette(), np.float32).reshape(256, 3)[mask]
    on = ((mask != 0) & (mask != IGNORE_INDEX))[..., None]
    out = np.where(on, (1 - alpha) * rgb + alpha * colours, rgb)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


class PairSource:
    """Checked (image, mask) file pairs; `load(i) -> (PIL RGB, (H, W) uint8)`.

    `pairs`: (image path, mask path or None). Checks every pair once (headers for sizes, mask pixels for
    labels) and keeps the good ones; `skipped` counts the rest by reason. `num_classes` None: inferred as the
    largest label (other than 255) + 1.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path | None]], num_classes: int | None,
                 classes: Sequence[str] | None, name: str) -> None:
        self.name = name
        self.skipped: dict[str, int] = {}
        kept, labels_max = [], -1
        for img_path, mask_path in pairs:
            reason, top = self._check(img_path, mask_path, num_classes)
            if reason is None:
                kept.append((img_path, mask_path))
                labels_max = max(labels_max, top)
                continue
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
            if sum(self.skipped.values()) <= _MAX_WARNINGS:
                warnings.warn(f"{name}: skipping {img_path.name} ({reason.replace('_', ' ')})", stacklevel=3)
        if not kept:
            why = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "no pairs found"
            raise ValueError(f"{name}: no usable image/mask pair ({why}); every image needs a same-size mask with "
                             f"labels 0..{'N-1' if num_classes is None else num_classes - 1} or 255")
        self.samples = kept
        self.num_classes = int(num_classes) if num_classes is not None else labels_max + 1
        self.classes = list(classes) if classes else [str(i) for i in range(self.num_classes)]

    @staticmethod
    def _check(img_path: Path, mask_path: Path | None, num_classes: int | None) -> tuple[str | None, int]:
        """(why the pair is skipped or None, its largest label other than 255)."""
        if mask_path is None or not mask_path.is_file():
            return "missing_mask", -1
        try:
            with Image.open(img_path) as im:
                size = im.size
                im.verify()
        except Exception:  # PIL raises many types for broken files
            return "unreadable_image", -1
        try:
            mask = load_mask(mask_path)
        except Exception:
            return "unreadable_mask", -1
        if (mask.shape[1], mask.shape[0]) != size:
            return "mask_size_mismatch", -1
        top = int(mask[mask != IGNORE_INDEX].max(initial=0))
        return ("label_out_of_range" if num_classes is not None and top >= num_classes else None), top

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        img_path, mask_path = self.samples[index]
        return load_image(img_path), load_mask(mask_path)


def open_voc(root: str | os.PathLike, split: str, num_classes: int | None = 21) -> PairSource:
    """`root/JPEGImages/<id>.jpg`, `root/SegmentationClass/<id>.png`, ids in `root/ImageSets/Segmentation/<split>.txt`
    (root may also be the VOCdevkit folder holding VOC2012/)."""
    root = Path(root).expanduser()
    if not (root / "JPEGImages").is_dir() and (root / "VOC2012" / "JPEGImages").is_dir():
        root = root / "VOC2012"
    ids_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not ids_file.is_file():
        raise FileNotFoundError(f"VOC split list not found: {ids_file} (expected ImageSets/Segmentation/{split}.txt)")
    ids = [line.strip() for line in ids_file.read_text().splitlines() if line.strip()]
    pairs = [(root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in ids]
    return PairSource(pairs, num_classes, VOC_CLASSES if num_classes == 21 else None, f"VOC {split} ({root})")


def open_pairs(root: str | os.PathLike, num_classes: int | None = None) -> PairSource:
    """`root/images/<stem>.<ext>` with `root/masks/<stem>.png`; `root/classes.txt` (one name per line, optional)
    names the classes and fixes their count."""
    root = Path(root).expanduser()
    images, masks = root / "images", root / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise FileNotFoundError(f"{root} needs images/ and masks/ folders (or a VOC layout with JPEGImages/)")
    classes = None
    if (root / "classes.txt").is_file():
        classes = [c.strip() for c in (root / "classes.txt").read_text().splitlines() if c.strip()]
        num_classes = num_classes or len(classes)
    mask_of = {p.stem: p for p in masks.iterdir() if p.suffix.lower() == ".png"}
    pairs = [(p, mask_of.get(p.stem)) for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
    return PairSource(pairs, num_classes, classes, f"pairs {root}")


class DigitsSegmentSource:
    """The built-in `digits-segment` set: DigitsScenes masks, 11 classes (0 background, digit + 1)."""

    def __init__(self, split: str, size: int = 320, num_scenes: int | None = None, seed: int = 0,
                 redraw: bool = False) -> None:
        from .digits_scenes import DigitsScenes

        self.scenes = DigitsScenes(split, size=size, num_scenes=num_scenes, seed=seed, redraw=redraw)
        self.num_classes = len(DIGITS_SEGMENT_CLASSES)
        self.classes = list(DIGITS_SEGMENT_CLASSES)
        self.skipped: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.scenes)

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        s = self.scenes[index]
        return s.image, s.mask


def open_segmentation(data: str, split: str, num_classes: int | None = None, image_size: int = 320,
                      num_scenes: int | None = None, redraw: bool = False):
    """A source by name: 'digits-segment', a VOC folder (JPEGImages/ present) or a pairs folder (with
    train/ and val/ sub-folders, or one folder used for `split='train'` only). redraw: digits-segment's train
    scenes drawn anew on every read (see `DigitsScenes`)."""
    if data == "digits-segment":
        return DigitsSegmentSource(split, size=image_size, num_scenes=num_scenes, redraw=redraw)
    root = Path(data).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"segmentation data not found: {root} (a folder, or 'digits-segment')")
    if (root / "JPEGImages").is_dir() or (root / "VOC2012").is_dir():
        return open_voc(root, split, 21 if num_classes is None else num_classes)
    if (root / split).is_dir():
        return open_pairs(root / split, num_classes)
    if split == "train":
        return open_pairs(root, num_classes)
    return None


# ------------------------------------------------------------------------------------------------ transforms
def segmentation_transform(mean: Sequence[float], std: Sequence[float], *, train: bool,
                           crop_size: int | tuple[int, int] | None = None, scale: tuple[float, float] = (0.5, 2.0),
                           hflip: float = 0.5, eval_size: int | None = None) -> Callable:
    """(PIL image, (H, W) uint8 mask) -> (image (3, h, w) float normalised, mask (h, w) int64).

    Train: random resize of the short side to [scale[0], scale[1]] x crop size, random crop (padded with 0 /
    255 where the image is smaller), horizontal flip. Eval: short side resized to `eval_size` (None = as is).
    Masks are resampled nearest, so labels stay labels.
    """
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    ops: list = [v2.ToImage()]
    if train:
        if crop_size is None:
            raise ValueError("train transforms need a crop_size")
        crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        base = min(crop)
        low = max(1, int(base * scale[0]))
        ops += [v2.RandomResize(low, max(low + 1, int(base * scale[1]))),  # scale [s, s]: a fixed resize
                v2.RandomCrop(crop, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
                v2.RandomHorizontalFlip(hflip)]
    elif eval_size is not None:
        ops.append(v2.Resize(int(eval_size)))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    pipeline = v2.Compose(ops)

    def apply(img: Image.Image, mask: np.ndarray):
        x, m = pipeline(img, tv_tensors.Mask(torch.from_numpy(np.array(mask, np.uint8, copy=True))))
        return x.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor).long()

    return apply


class SegmentationView(EvalView):
    """`source.load(i)` through `transform(image, mask)`. The engine wraps it in `SeededView`, so a training item's
    load (a redrawn digits scene takes its layout from numpy's RNG) and augmentation are pure functions of a seed."""

    def __getitem__(self, index: int):
        return self.transform(*self.source.load(index))


def pad_collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (image, mask) pairs of different sizes: pad bottom/right to the largest, images with 0 and masks
    with 255 (ignored by loss and metrics). -> (B, 3, H, W) float, (B, H, W) int64."""
    h = max(x.shape[-2] for x, _ in batch)
    w = max(x.shape[-1] for x, _ in batch)
    images = torch.zeros(len(batch), batch[0][0].shape[0], h, w, dtype=batch[0][0].dtype)
    masks = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.long)
    for i, (x, m) in enumerate(batch):
        images[i, :, :x.shape[-2], :x.shape[-1]] = x
        masks[i, :m.shape[-2], :m.shape[-1]] = m
    return images, masks
