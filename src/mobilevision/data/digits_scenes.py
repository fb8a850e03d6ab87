"""Built-in real-derived scenes for detection and segmentation: real handwritten digits on real photos.

Each scene is a crop of one of scikit-image's sample photos, resized to `size` x `size`, with 1-4 of
scikit-learn's handwritten digits (8x8 scans, upsampled) pasted at random positions and heights
(24-96 px at 320 px). Boxes are the tight boxes of the pasted strokes, the mask is the stroke pixels
(class = digit + 1, background 0). Train scenes use only the digits of the fixed classification train
split and val scenes only the val split, so the two never share a digit scan. Scene `i` of a split is a
pure function of (split, i, seed): every epoch, rank and resumed run sees the same scenes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

# Colour photos that ship inside scikit-image (no download).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "colorwheel")
NUM_CLASSES = 10  # digits 0-9; segmentation adds background as class 0
SPLIT_SIZES = {"train": 1000, "val": 200}
_SPLIT_IDS = {"train": 1, "val": 2}


@dataclass
class Scene:
    """image: RGB (size x size); boxes: (N, 4) float32 xyxy in pixels; labels: (N,) int64 digit 0-9;
    mask: (size, size) uint8 with 0 = background and digit + 1 on its strokes."""

    image: Image.Image
    boxes: np.ndarray
    labels: np.ndarray
    mask: np.ndarray


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    try:
        import skimage.data
    except ImportError as err:
        raise ModuleNotFoundError(
            "the built-in digits scenes need scikit-image: pip install scikit-image", name="skimage") from err
    return tuple(np.ascontiguousarray(getattr(skimage.data, n)()[..., :3]) for n in PHOTOS)


@lru_cache(maxsize=2)
def _digit_scans(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 8, 8) float32 ink in [0, 1] and (N,) labels of the classification split `split`."""
    from .datasets import digits_split

    scans, labels = digits_split(split)
    return scans.astype(np.float32) / 16.0, labels.astype(np.int64)


class DigitsScenes:
    """`scenes[i] -> Scene`; `len(scenes)` scenes of `split` ('train' | 'val').

    size: side of the square scene in pixels; digit heights are drawn in [min_height, max_height] px,
    scaled with `size / 320`; at most `max_digits` per scene, placed without overlapping. redraw: a new layout
    (photo crop, digits, places, sizes, colours) on every read, taken from numpy's global RNG, which the
    training views seed per sample and epoch (so still deterministic and resumable): augmentation for the
    train split, against memorising its 1,437 scans; the val split always keeps its fixed scenes.
    """

    def __init__(self, split: str = "train", *, size: int = 320, num_scenes: int | None = None, seed: int = 0,
                 min_digits: int = 1, max_digits: int = 4, min_height: int = 24, max_height: int = 96,
                 redraw: bool = False) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if size < 32:
            raise ValueError(f"scene size must be >= 32 px, got {size}")
        if not 1 <= min_digits <= max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
        if redraw and split != "train":
            raise ValueError("redraw is a training augmentation: the val scenes stay fixed")
        self.split, self.size, self.seed, self.redraw = split, int(size), int(seed), bool(redraw)
        self.num_scenes = SPLIT_SIZES[split] if num_scenes is None else int(num_scenes)
        self.min_digits, self.max_digits = min_digits, max_digits
        scale = self.size / 320
        self.min_height = max(8, round(min_height * scale))
        self.max_height = max(self.min_height, min(self.size // 2, round(max_height * scale)))
        self.classes = [str(d) for d in range(NUM_CLASSES)]

    def __len__(self) -> int:
        return self.num_scenes

    def __getitem__(self, index: int) -> Scene:
        return self.draw(index, self.redraw)

    def draw(self, index: int, redraw: bool = False) -> Scene:
        """Scene `index`: its fixed layout, or (redraw) one taken from numpy's global RNG."""
        if not 0 <= index < self.num_scenes:
            raise IndexError(f"scene {index} out of range (0..{self.num_scenes - 1})")
        key = [self.seed, _SPLIT_IDS[self.split], index]
        rng = np.random.default_rng(key + [int(np.random.randint(2 ** 31))] if redraw else key)
        canvas = self._background(rng)  # (S, S, 3) float32 in [0, 255]
        mask = np.zeros((self.size, self.size), np.uint8)
        scans, scan_labels = _digit_scans(self.split)
        boxes, labels = [], []
        for _ in range(int(rng.integers(self.min_digits, self.max_digits + 1))):
            k = int(rng.integers(len(scans)))
            placed = self._paste(canvas, mask, scans[k], int(scan_labels[k]), boxes, rng)
            if placed is not None:
                boxes.append(placed)
                labels.append(int(scan_labels[k]))
        image = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB")
        return Scene(image, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64), mask)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        photos = _photos()
        photo = photos[int(rng.integers(len(photos)))]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
        y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((self.size, self.size), Image.BILINEAR)
        return np.asarray(crop, np.float32).copy()

    def _paste(self, canvas: np.ndarray, mask: np.ndarray, scan: np.ndarray, digit: int, taken: list,
               rng: np.random.Generator, height: int | None = None) -> list[float] | None:
        """Paste one scan in a free spot (`height` px high, default drawn from the scene's range); returns its
        stroke box [x0, y0, x1, y1] or None if no spot was free."""
        if height is None:
            height = int(rng.integers(self.min_height, self.max_height + 1))
        width = max(4, round(height * rng.uniform(0.6, 0.9)))  # the scans are square; real digits are narrow
        ink = np.asarray(Image.fromarray(scan).resize((width, height), Image.BILINEAR), np.float32).clip(0, 1)
        for _ in range(20):
            y0 = int(rng.integers(self.size - height + 1))
            x0 = int(rng.integers(self.size - width + 1))
            x1, y1 = x0 + width + 2, y0 + height + 2  # at least 2 px from every box already placed
            if all(x1 <= t[0] or t[2] + 2 <= x0 or y1 <= t[1] or t[3] + 2 <= y0 for t in taken):
                break
        else:
            return None
        region = canvas[y0:y0 + height, x0:x0 + width]
        # Ink colour far from the local background so the digit stays visible on any photo.
        local = region.reshape(-1, 3).mean(0)
        colour = np.where(local > 127, rng.uniform(0, 60, 3), rng.uniform(195, 255, 3)).astype(np.float32)
        alpha = ink[..., None]
        region[:] = region * (1 - alpha) + colour * alpha
        strokes = ink > 0.5
        mask[y0:y0 + height, x0:x0 + width][strokes] = digit + 1
        ys, xs = np.nonzero(strokes)
        if len(ys) == 0:
            return None
        return [float(x0 + xs.min()), float(y0 + ys.min()), float(x0 + xs.max() + 1), float(y0 + ys.max() + 1)]


class DigitsOnPhotos:
    """The built-in `digits-photos` classification set: every scan of the digits `split` pasted on `copies` real
    photo crops (`image_size` px square, the digit 55-90 % of the side high, ink coloured against the photo as in
    `DigitsScenes`). `load(i) -> (PIL RGB image, digit)`; sample i is a pure function of (split, i, seed).

    It pre-trains backbones for the digits scenes: a classifier of the plain `digits` set (grey ink on black)
    names 10-15 % of the val scenes' digit crops right, so detectors and segmenters started from it learn the
    glyphs on photos almost from scratch."""

    def __init__(self, split: str = "train", image_size: int = 48, copies: int | None = None, seed: int = 0) -> None:
        self.scenes = DigitsScenes(split, size=max(32, int(image_size)), seed=seed)
        self.split, self.size = split, self.scenes.size
        self.scans, labels = _digit_scans(split)
        self.copies = (4 if split == "train" else 1) if copies is None else int(copies)
        if self.copies < 1:
            raise ValueError(f"copies must be >= 1, got {self.copies}")
        self.targets = [int(v) for v in labels] * self.copies
        self.classes = [str(d) for d in range(NUM_CLASSES)]
        self.skipped: list = []

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int) -> tuple[Image.Image, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"image {index} out of range (0..{len(self) - 1})")
        k = index % len(self.scans)
        rng = np.random.default_rng([self.scenes.seed, _SPLIT_IDS[self.split], 3, index])
        canvas = self.scenes._background(rng)
        height = int(rng.integers(round(0.55 * self.size), round(0.9 * self.size) + 1))
        self.scenes._paste(canvas, np.zeros((self.size, self.size), np.uint8), self.scans[k], self.targets[k],
                           [], rng, height=height)
        return Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB"), self.targets[k]
