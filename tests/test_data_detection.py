"""Detection data: COCO-format parsing with broken entries, digits-detect, box-aware transforms, collate."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilevision.data.detection import (
    CocoDetection, DigitsDetect, collate, coco_splits, detection_transform, open_detection,
)


def _photo(name: str, size=(200, 160)) -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data")
    return Image.fromarray(getattr(skimage_data, name)()[..., :3]).resize(size)


def make_coco(root: Path, split: str = "train", broken: bool = True, unknown_category: bool = False) -> Path:
    """A COCO folder split of real photos; with `broken`: a box outside the image, a zero-area box, a missing
    file and a truncated JPEG."""
    img_dir = root / split
    img_dir.mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, anns = [], []
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        _photo(name).save(img_dir / f"{name}.jpg", quality=90)
        images.append({"id": i + 1, "file_name": f"{name}.jpg", "width": 200, "height": 160})
        anns.append({"id": 10 * i + 1, "image_id": i + 1, "category_id": 3 if i % 2 else 7,
                     "bbox": [20.0, 30.0, 60.0, 50.0], "iscrowd": 0})
    if broken:
        anns.append({"id": 100, "image_id": 1, "category_id": 7, "bbox": [150.0, 120.0, 100.0, 100.0]})  # outside
        anns.append({"id": 101, "image_id": 2, "category_id": 3, "bbox": [50.0, 50.0, 0.0, 20.0]})  # zero area
        images.append({"id": 4, "file_name": "missing.jpg", "width": 200, "height": 160})
        data = (img_dir / "coffee.jpg").read_bytes()
        (img_dir / "truncated.jpg").write_bytes(data[: len(data) // 2])
        images.append({"id": 5, "file_name": "truncated.jpg", "width": 200, "height": 160})
        anns.append({"id": 102, "image_id": 5, "category_id": 3, "bbox": [5.0, 5.0, 20.0, 20.0]})
    if unknown_category:
        anns.append({"id": 103, "image_id": 1, "category_id": 42, "bbox": [5.0, 5.0, 20.0, 20.0]})
    cats = [{"id": 3, "name": "cup"}, {"id": 7, "name": "face"}]
    ann_file = root / "annotations" / f"instances_{split}.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return ann_file


def test_coco_broken_entries_counted(tmp_path):
    ann = make_coco(tmp_path)
    ds = CocoDetection(ann, tmp_path / "train")
    assert len(ds) == 3
    assert ds.classes == ["cup", "face"]
    assert dict(ds.skipped) == {"box_clipped_to_image": 1, "zero_area_box_dropped": 1, "missing_image": 1,
                                "unreadable_image": 1}
    boxes, labels = ds.annotations(0)  # astronaut: its box and the clipped one
    np.testing.assert_allclose(boxes, [[20, 30, 80, 80], [150, 120, 200, 160]])
    assert labels.tolist() == [2, 2]  # category 7 -> label 2
    image, target = ds[1]
    assert image.shape == (3, 160, 200) and image.dtype == torch.float32 and float(image.max()) <= 1
    assert target["labels"].tolist() == [1]


def test_coco_unknown_category_and_malformed_json(tmp_path):
    ann = make_coco(tmp_path, unknown_category=True)
    with pytest.raises(ValueError, match=r"instances_train.json: annotations\[\d+\] \(id 103\) has category_id 42"):
        CocoDetection(ann, tmp_path / "train")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        CocoDetection(bad)
    bad.write_text('{"images": [], "annotations": []}')
    with pytest.raises(ValueError, match="'categories'"):
        CocoDetection(bad)


def test_coco_folder_and_json_layouts(tmp_path):
    make_coco(tmp_path, "train")
    make_coco(tmp_path, "val", broken=False)
    (tr, tr_dir), (va, va_dir) = coco_splits(tmp_path)
    assert tr.name == "instances_train.json" and tr_dir == tmp_path / "train" and va_dir == tmp_path / "val"
    train, val, classes, skipped = open_detection(str(tmp_path), 96)
    assert classes == ["cup", "face"] and skipped["train_missing_image"] == 1 and len(val) == 3
    images, targets = collate([val[0], val[1]])
    assert images.shape == (2, 3, 96, 96)
    # a single JSON: its image folder is guessed (file names are relative to ../train here)
    single = CocoDetection(tmp_path / "annotations" / "instances_val.json")
    assert single.image_dir == tmp_path / "val" and len(single) == 3
    with pytest.raises(FileNotFoundError, match="instances_"):
        coco_splits(tmp_path / "train")


def test_eval_transform_scales_boxes():
    img = Image.new("RGB", (200, 100))
    from torchvision import tv_tensors

    target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor([[20.0, 10.0, 60.0, 50.0]]), format="XYXY",
                                                canvas_size=(100, 200)), "labels": torch.tensor([1])}
    out, t = detection_transform(50)(img, target)
    assert out.shape == (3, 50, 50)
    torch.testing.assert_close(t["boxes"].as_subclass(torch.Tensor), torch.tensor([[5.0, 5.0, 15.0, 25.0]]))


def test_train_transform_keeps_boxes_valid():
    ds = DigitsDetect("train", detection_transform(160, True, hflip=False), num_scenes=8, size=160)
    torch.manual_seed(0)
    for i in range(8):
        image, t = ds[i]
        b = t["boxes"]
        assert image.shape == (3, 160, 160)
        assert len(b) == len(t["labels"])
        if len(b):
            assert float(b.min()) >= 0 and float(b.max()) <= 160
            assert bool(((b[:, 2] - b[:, 0]) >= 1).all() and ((b[:, 3] - b[:, 1]) >= 1).all())
            assert int(t["labels"].min()) >= 1 and int(t["labels"].max()) <= 10


def test_digits_detect_labels_shift():
    ds = DigitsDetect("val", None, num_scenes=2)
    boxes, labels = ds.annotations(0)
    from mobilevision.data.digits_scenes import DigitsScenes

    assert (labels == DigitsScenes("val", num_scenes=2)[0].labels + 1).all()
    image, t = ds[0]
    assert image.shape == (3, 320, 320)
    np.testing.assert_allclose(t["boxes"].numpy(), boxes)
