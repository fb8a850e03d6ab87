"""Image sources: checked ImageFolder directories and the built-in `digits` set.

Both give `(PIL RGB image, label)` pairs through `load(index)`; `TrainView` / `EvalView` apply transforms.
Broken files are found once, when a folder is opened, so every DDP rank and every resumed run sees the
same list of samples.
"""
from __future__ import annotations

import contextlib
import os
import random
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
_MAX_WARNINGS = 10

# Digits split: 20% of each class goes to val, drawn with this seed (sklearn train_test_split,
# stratify=y). 1,797 images -> 1,437 train / 360 val. Fixed so that results compare across runs.
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB: EXIF rotation applied, alpha composited on white, 16-bit scaled down."""
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        # "I" can hold 8-bit data promoted by PIL; only rescale when values exceed 8 bits.
        if mode != "I" or arr.max(initial=0) > 255:
            arr = arr / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        hi = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        img = Image.fromarray(np.clip(np.rint(arr / hi * 255), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file fully and return it as RGB."""
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


def check_image(path: str) -> str | None:
    """None if `path` decodes completely, else the reason it cannot be used."""
    try:
        if os.path.getsize(path) == 0:
            return "zero-byte file"
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (img.width // 8 or 1, img.height // 8 or 1))  # decode at 1/8 scale: fast
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"{type(err).__name__}: {str(err)[:120]}"
    return None


class CheckedImageFolder:
    """`root/<class>/<image>` with every image checked once; broken files are skipped and counted.

    Attributes: `classes` (sorted), `samples` (list of (path, label)), `skipped` (list of (path, reason)).
    """

    def __init__(self, root: str | os.PathLike, verify: bool = True, workers: int = 4) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data directory not found: {self.root}")
        self.classes = _class_dirs(self.root)
        if not self.classes:
            raise ValueError(f"{self.root} holds no class sub-directories; expected {self.root}/<class>/<image>")
        candidates = []
        for label, cls in enumerate(self.classes):
            for dirpath, _, files in sorted(os.walk(self.root / cls, followlinks=True)):
                for f in sorted(files):
                    if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                        candidates.append((os.path.join(dirpath, f), label))
        if verify:
            with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL releases the GIL while decoding
                reasons = list(pool.map(check_image, [p for p, _ in candidates]))
        else:
            reasons = ["zero-byte file" if os.path.getsize(p) == 0 else None for p, _ in candidates]
        self.samples = [s for s, r in zip(candidates, reasons) if r is None]
        self.skipped = [(s[0], r) for s, r in zip(candidates, reasons) if r is not None]
        for path, reason in self.skipped[:_MAX_WARNINGS]:
            warnings.warn(f"skipping unreadable image {path} ({reason})", stacklevel=2)
        if len(self.skipped) > _MAX_WARNINGS:
            warnings.warn(f"skipped {len(self.skipped)} unreadable images in {self.root} in all", stacklevel=2)
        counts = np.bincount([lbl for _, lbl in self.samples], minlength=len(self.classes))
        empty = [c for c, n in zip(self.classes, counts) if n == 0]
        if empty:
            raise ValueError(f"class folders with no readable image in {self.root}: {', '.join(empty[:10])}")
        self.targets = [lbl for _, lbl in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return load_image(path), label


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed digits split: (N, 8, 8) float64 scans with ink 0-16 and (N,) int labels, in data-set order."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "val"):
        raise ValueError(f"digits split must be 'train' or 'val', got {split!r}")
    digits = load_digits()
    idx = np.arange(len(digits.target))
    train, val = train_test_split(idx, test_size=DIGITS_VAL_FRACTION, stratify=digits.target,
                                  random_state=DIGITS_SPLIT_SEED)
    chosen = np.sort(train if split == "train" else val)
    return digits.images[chosen], digits.target[chosen]


class DigitsSource:
    """scikit-learn's 1,797 8x8 handwritten digits, upsampled (bicubic) to `image_size` and made RGB.

    Split: stratified 80/20 with seed 0 (1,437 train / 360 val); see DIGITS_* constants.
    """

    def __init__(self, split: str, image_size: int = 64) -> None:
        scans, labels = digits_split(split)
        self.classes = [str(i) for i in range(10)]
        self.targets = [int(v) for v in labels]
        self.skipped: list = []
        inked = np.clip(np.rint(scans * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # (N, 8, 8) ink=255
        self.images = [Image.fromarray(pix, "L").resize((image_size, image_size), Image.BICUBIC).convert("RGB")
                       for pix in inked]

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int) -> tuple[Image.Image, int]:
        return self.images[index], self.targets[index]


def _class_dirs(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def open_split(data: str, split: str, image_size: int = 64, verify: bool = True):
    """`digits`, `digits-photos` (the digits on photo crops) or `DIR` -> the source for `split` ('train' or 'val')."""
    if data == "digits":
        return DigitsSource(split, image_size)
    if data == "digits-photos":
        from .digits_scenes import DigitsOnPhotos

        return DigitsOnPhotos(split, image_size)
    root = Path(data).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--data {data!r}: not 'digits', 'digits-photos' or a directory")
    if not (root / split).is_dir():
        raise FileNotFoundError(f"{root} has no {split}/ directory; expected {root}/train/<class>/... and "
                                f"{root}/val/<class>/...")
    return CheckedImageFolder(root / split, verify=verify)


def open_datasets(data: str, image_size: int = 64, verify: bool = True):
    """Train and val sources with identical class lists (ValueError naming the difference otherwise).

    Directory problems are reported before any image is read."""
    if data not in ("digits", "digits-photos"):
        root = Path(data).expanduser()
        for split in ("train", "val"):
            if not (root / split).is_dir():
                open_split(data, split)  # raises the right error
        t_cls, v_cls = _class_dirs(root / "train"), _class_dirs(root / "val")
        if t_cls != v_cls:
            only_t = sorted(set(t_cls) - set(v_cls))
            only_v = sorted(set(v_cls) - set(t_cls))
            raise ValueError(f"train and val classes differ in {data}: only in train: {only_t[:10]}, "
                             f"only in val: {only_v[:10]}")
    return open_split(data, "train", image_size, verify), open_split(data, "val", image_size, verify)


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with torch, numpy and `random` seeded from `seed`, restoring their states afterwards."""
    t, n, r = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.default_generator.manual_seed(seed)  # torch.manual_seed costs ~100x more per call
    np.random.seed(seed % (2 ** 32))
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(t)
        np.random.set_state(n)
        random.setstate(r)


class TrainView(Dataset):
    """Training samples indexed by `(height, width, index, seed)` tuples from `VariableBatchSampler`.

    The augmentation of each sample is seeded by its tuple, so a batch is the same whatever the worker,
    the rank count or a resume in the middle of an epoch.
    """

    takes_size = True  # the engine passes the sampler's (h, w, index, seed) items unchanged

    def __init__(self, source, transform_for: Callable[[int, int], Callable]) -> None:
        self.source, self.transform_for = source, transform_for
        self._cache: dict[tuple[int, int], Callable] = {}

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item):
        h, w, index, seed = item
        tf = self._cache.get((h, w))
        if tf is None:
            tf = self._cache[(h, w)] = self.transform_for(h, w)
        img, label = self.source.load(index)
        with seeded(seed):
            x = tf(img)
        return x, label


class SeededView(Dataset):
    """Any map-style dataset behind `VariableBatchSampler`: item `(h, w, index, seed)` -> `dataset[index]`
    loaded with torch, numpy and `random` seeded from `seed` (the size is ignored)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        _, _, index, seed = item
        with seeded(seed):
            return self.dataset[index]


class EvalView(Dataset):
    """Deterministic evaluation samples: `source.load(i)` through a fixed transform."""

    def __init__(self, source, transform: Callable) -> None:
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        img, label = self.source.load(index)
        return self.transform(img), label
