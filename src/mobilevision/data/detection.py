"""Detection data: COCO-format folders / JSON files, the built-in `digits-detect` scenes, box-aware transforms.

Every dataset here yields `(image, target)`: image a float tensor (3, H, W) in [0, 1] after the transform,
target a dict with `boxes` (N, 4) float xyxy pixels of the transformed image, `labels` (N,) int64 in
1..K (0 is the detector's background), `image_id` int and `orig_size` (H0, W0) of the file. `collate`
stacks the images (the transforms resize to one size) and keeps the targets as a list.

Bad data is handled before training: boxes outside the image are clipped, zero-area boxes dropped, missing /
unreadable / truncated image files skipped, all counted in `skipped` (reason -> count); a malformed JSON or
an annotation with an unknown category id is one ValueError naming the file and the entry.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors
from torchvision.transforms import v2


# ----------------------------------------------------------------------------------------------- transforms
def detection_transform(size: int | tuple[int, int], train: bool = False, *, iou_crop: bool = True,
                        photometric: bool = True, hflip: bool = True, zoom_out: float = 1.0) -> v2.Compose:
    """(PIL image, target with tv_tensors.BoundingBoxes) -> (float image (3, H, W) in [0, 1], target), resized
    to `size`.

    Train adds SSD's augmentation: photometric distortion, zoom-out up to `zoom_out` x (1 = off), the random
    IoU crop, horizontal flip (off for label-chiral sets such as digits), then drops degenerate boxes.
    """
    hw = (size, size) if isinstance(size, int) else tuple(size)
    ops: list = [v2.ToImage()]
    if train:
        if photometric:
            ops.append(v2.RandomPhotometricDistort(p=0.5))
        if zoom_out > 1.0:
            ops.append(v2.RandomZoomOut(fill={tv_tensors.Image: (124, 116, 104), "others": 0},
                                        side_range=(1.0, zoom_out), p=0.5))
        if iou_crop:
            ops.append(v2.RandomIoUCrop())
        if hflip:
            ops.append(v2.RandomHorizontalFlip())
    ops += [v2.Resize(hw, antialias=True), v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0),
            v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(ops)


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Stack images (B, 3, H, W); targets stay a list of dicts with plain tensors."""
    images = torch.stack([img for img, _ in batch])
    targets = [{k: (v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
               for _, t in batch]
    return images, targets


def _sample(image: Image.Image, boxes: np.ndarray, labels: np.ndarray, image_id: int,
            transform: Callable | None) -> tuple[Any, dict]:
    w, h = image.size
    target = {"boxes": tv_tensors.BoundingBoxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                                format="XYXY", canvas_size=(h, w)),
              "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
              "image_id": int(image_id), "orig_size": (h, w)}
    if transform is None:
        return v2.functional.to_dtype(v2.functional.to_image(image), torch.float32, scale=True), target
    return transform(image, target)


# ----------------------------------------------------------------------------------------------- digits
class DigitsDetect:
    """The built-in `digits-detect` set: `data.digits_scenes.DigitsScenes` with labels 1..10 (digit + 1)."""

    def __init__(self, split: str = "train", transform: Callable | None = None, **scene_kw: Any) -> None:
        from .digits_scenes import DigitsScenes

        self.scenes = DigitsScenes(split, **scene_kw)
        self.transform = transform
        self.classes = [str(d) for d in range(10)]

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int):
        s = self.scenes[index]
        return _sample(s.image, s.boxes, s.labels + 1, index, self.transform)

    def annotations(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.scenes.draw(index)  # the fixed layout, also for redrawn train scenes (the mean-box baseline)
        return s.boxes, s.labels + 1


# ----------------------------------------------------------------------------------------------- COCO
@dataclass
class _Record:
    path: Path
    image_id: int
    boxes: np.ndarray  # (N, 4) xyxy in file pixels
    labels: np.ndarray  # (N,) 1..K


class CocoDetection:
    """A COCO-format annotations JSON with its image folder.

    Category ids map to labels 1..K in ascending id order (`classes[label - 1]` is the name). Images with no
    boxes are kept (background-only). `skipped` counts what was repaired or dropped while opening.
    `verify_images` decodes every file once so truncated ones are skipped before training.
    """

    def __init__(self, annotations: str | os.PathLike, image_dir: str | os.PathLike | None = None,
                 transform: Callable | None = None, verify_images: bool = True,
                 categories: Sequence[dict] | None = None) -> None:
        self.ann_file = Path(annotations)
        if not self.ann_file.is_file():
            raise FileNotFoundError(f"COCO annotations file not found: {self.ann_file}")
        self.transform = transform
        self.skipped: Counter = Counter()
        data = _read_json(self.ann_file)
        cats = list(categories) if categories is not None else data["categories"]
        self.category_ids = sorted(int(c["id"]) for c in cats)
        self.label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
        self.classes = [names[c] for c in self.category_ids]
        self.image_dir = Path(image_dir) if image_dir is not None else _guess_image_dir(self.ann_file, data["images"])
        self.records = self._records(data, verify_images)

    def _records(self, data: dict, verify: bool) -> list[_Record]:
        images = {}
        for k, im in enumerate(data["images"]):
            try:
                images[int(im["id"])] = (str(im["file_name"]), int(im.get("width", 0)), int(im.get("height", 0)))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{self.ann_file}: images[{k}] needs 'id' and 'file_name', got {im!r}") from None
        per_image: dict[int, list] = {i: [] for i in images}
        for k, ann in enumerate(data["annotations"]):
            try:
                image_id, cat, bbox = int(ann["image_id"]), int(ann["category_id"]), [float(v) for v in ann["bbox"]]
            except (KeyError, TypeError, ValueError):
                ann_id = ann.get("id") if isinstance(ann, dict) else "?"
                raise ValueError(f"{self.ann_file}: annotations[{k}] (id {ann_id}) needs image_id, category_id and "
                                 f"bbox [x, y, w, h], got {ann!r}") from None
            where = f"{self.ann_file}: annotations[{k}] (id {ann.get('id')})"
            if len(bbox) != 4:
                raise ValueError(f"{where} bbox must be [x, y, w, h], got {bbox}")
            if cat not in self.label_of:
                raise ValueError(f"{where} has category_id {cat}, which is not among the categories "
                                 f"{self.category_ids}")
            if image_id not in images:
                raise ValueError(f"{where} names image_id {image_id}, which is not in 'images'")
            if ann.get("iscrowd", 0):
                self.skipped["crowd_box_ignored"] += 1
                continue
            per_image[image_id].append((bbox, self.label_of[cat]))
        records = []
        for image_id, (name, w, h) in images.items():
            path = self.image_dir / name
            if not path.is_file():
                self.skipped["missing_image"] += 1
                continue
            if verify or not (w and h):
                try:
                    with Image.open(path) as img:
                        img.load()  # a full decode: truncated files raise here
                        w, h = img.size
                except (OSError, UnidentifiedImageError, SyntaxError):
                    self.skipped["unreadable_image"] += 1
                    continue
            boxes, labels = [], []
            for (x, y, bw, bh), label in per_image[image_id]:
                box = np.array([x, y, x + bw, y + bh], np.float32)
                clipped = np.clip(box, 0, [w, h, w, h])
                if not np.array_equal(clipped, box):
                    self.skipped["box_clipped_to_image"] += 1
                if clipped[2] - clipped[0] <= 0 or clipped[3] - clipped[1] <= 0:
                    self.skipped["zero_area_box_dropped"] += 1
                    continue
                boxes.append(clipped)
                labels.append(label)
            records.append(_Record(path, image_id, np.asarray(boxes, np.float32).reshape(-1, 4),
                                   np.asarray(labels, np.int64)))
        if not records:
            raise ValueError(f"{self.ann_file}: no readable image left (skipped: {dict(self.skipped)}); "
                             f"check the image folder {self.image_dir}")
        return records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        r = self.records[index]
        with Image.open(r.path) as img:
            image = img.convert("RGB")
        return _sample(image, r.boxes, r.labels, r.image_id, self.transform)

    def annotations(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        r = self.records[index]
        return r.boxes, r.labels


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); a COCO annotations file is expected") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a COCO annotations file is a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: COCO annotations need a list '{key}'; found {type(data.get(key)).__name__}")
    for k, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or "id" not in c:
            raise ValueError(f"{path}: categories[{k}] needs an 'id', got {c!r}")
    return data


def _guess_image_dir(ann_file: Path, images: list) -> Path:
    """The folder the JSON's file names are relative to: beside it, `images/` beside it, or `../images`."""
    first = next((str(im.get("file_name")) for im in images if isinstance(im, dict) and im.get("file_name")), None)
    here, up = ann_file.parent, ann_file.parent.parent
    for c in (here, here / "images", up / "images", up / ann_file.stem.replace("instances_", "")):
        if first is not None and (c / first).is_file():
            return c
    return ann_file.parent


def coco_splits(path: str | os.PathLike) -> tuple[tuple[Path, Path | None], tuple[Path, Path | None] | None]:
    """((train json, image dir), (val json, image dir) or None) for `--data PATH`.

    PATH is a folder with `annotations/instances_{train,val}.json` and `train/`, `val/` image folders, or one
    annotations JSON (then it is the val set too).
    """
    p = Path(path).expanduser()
    if p.is_file():
        return (p, None), None
    if p.is_dir():
        splits = []
        for split in ("train", "val"):
            ann = p / "annotations" / f"instances_{split}.json"
            if not ann.is_file():
                raise FileNotFoundError(f"COCO folder {p} has no annotations/instances_{split}.json; expected "
                                        "annotations/instances_{train,val}.json with train/ and val/ image folders")
            img_dir = p / split
            splits.append((ann, img_dir if img_dir.is_dir() else None))
        return splits[0], splits[1]
    raise FileNotFoundError(f"detection data {p} not found: pass 'digits-detect', a COCO annotations JSON or a "
                            "folder with annotations/instances_{train,val}.json")


def open_detection(data: str, size: int, *, augment: dict | None = None, verify_images: bool = True,
                   redraw: bool = False):
    """(train, val, classes, skipped) for `--data` = 'digits-detect' or a COCO JSON / folder.

    augment: options of `detection_transform` for the train set (digits default to no flip). redraw:
    digits-detect's train scenes drawn anew on every read (see `DigitsScenes`).
    """
    augment = {k: v for k, v in (augment or {}).items() if v is not None}
    if data == "digits-detect":
        # mirrored digits are other glyphs; the ink colours already contrast with the photo, and the
        # distortion costs more CPU than the scene itself. Scenes are drawn at `size` (no resize needed).
        augment.setdefault("hflip", False)
        augment.setdefault("photometric", False)
        train = DigitsDetect("train", detection_transform(size, True, **augment), size=size, redraw=redraw)
        val = DigitsDetect("val", detection_transform(size, False), size=size)
        return train, val, train.classes, {}
    (tr_ann, tr_dir), val_split = coco_splits(data)
    train = CocoDetection(tr_ann, tr_dir, detection_transform(size, True, **augment), verify_images)
    if val_split is None:
        val = CocoDetection(tr_ann, tr_dir, detection_transform(size, False), verify_images)
        skipped = dict(train.skipped)
    else:
        cats = [{"id": c, "name": n} for c, n in zip(train.category_ids, train.classes)]  # train's label order
        val = CocoDetection(*val_split, detection_transform(size, False), verify_images, categories=cats)
        skipped = {f"train_{k}": v for k, v in train.skipped.items()}
        skipped.update({f"val_{k}": v for k, v in val.skipped.items()})
    return train, val, train.classes, skipped
