"""Segmentation data: VOC and pair folders of real photos with broken entries, mask-aware transforms."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mobilevision.data import SeededView
from mobilevision.data.segmentation import (IGNORE_INDEX, DigitsSegmentSource, SegmentationView, load_mask,
                                            open_pairs, open_segmentation, open_voc, overlay_mask, pad_collate,
                                            save_mask, segmentation_transform)


def _photo(name: str, size=(72, 56)) -> Image.Image:
    import skimage.data

    return Image.fromarray(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])).resize(size)


def _mask(size=(72, 56), label=1, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros((size[1], size[0]), np.uint8)
    m[10:30, 20:50] = label
    m[rng.integers(size[1], size=20), rng.integers(size[0], size=20)] = IGNORE_INDEX  # VOC's boundary label
    return m


def make_voc(root, broken: bool = True):
    """Three good pairs of real photos, then (if broken) a mask of the wrong size, a label 30 and no mask."""
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    ids = []
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        _photo(name).save(root / "JPEGImages" / f"good{i}.jpg")
        save_mask(_mask(label=i + 1, seed=i), root / "SegmentationClass" / f"good{i}.png")
        ids.append(f"good{i}")
    if broken:
        _photo("rocket").save(root / "JPEGImages" / "bad_size.jpg")
        save_mask(_mask(size=(40, 40)), root / "SegmentationClass" / "bad_size.png")
        _photo("astronaut").save(root / "JPEGImages" / "bad_label.jpg")
        save_mask(_mask(label=30), root / "SegmentationClass" / "bad_label.png")
        _photo("coffee").save(root / "JPEGImages" / "no_mask.jpg")
        ids += ["bad_size", "bad_label", "no_mask"]
    for split in ("train", "val"):
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def test_voc_palette_masks_round_trip(tmp_path):
    m = _mask(label=7)
    save_mask(m, tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "P"
    assert np.array_equal(load_mask(tmp_path / "m.png"), m)


def test_overlay_colours_only_labelled_pixels():
    img, m = _photo("coffee"), _mask(label=15)
    out = np.asarray(overlay_mask(img, m, alpha=1.0))
    assert (out[m == 0] == np.asarray(img)[m == 0]).all()
    assert (out[m == 15] == (192, 128, 128)).all()  # VOC's "person" colour


def test_voc_folder_skips_and_counts_broken_pairs(tmp_path):
    make_voc(tmp_path)
    with pytest.warns(UserWarning, match="skipping"):
        src = open_voc(tmp_path, "train")
    assert len(src) == 3 and src.num_classes == 21 and src.classes[15] == "person"
    assert src.skipped == {"mask_size_mismatch": 1, "label_out_of_range": 1, "missing_mask": 1}
    img, mask = src.load(0)
    assert img.mode == "RGB" and mask.shape == (56, 72) and set(np.unique(mask)) == {0, 1, IGNORE_INDEX}


def test_nothing_usable_is_one_line_value_error(tmp_path):
    make_voc(tmp_path)
    (tmp_path / "ImageSets/Segmentation/val.txt").write_text("bad_size\nno_mask\n")
    with pytest.raises(ValueError, match=r"no usable image/mask pair \(mask_size_mismatch 1, missing_mask 1\)") as e:
        with pytest.warns(UserWarning):
            open_voc(tmp_path, "val")
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="test.txt"):
        open_voc(tmp_path, "test")


def test_pairs_folder_with_classes_txt_and_split_folders(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir(parents=True)
        (tmp_path / split / "classes.txt").write_text("bg\ncat\n")
        _photo("chelsea").save(tmp_path / split / "images" / "a.jpg")
        Image.fromarray(_mask(label=1)).save(tmp_path / split / "masks" / "a.png")  # plain greyscale mask
        _photo("coffee").save(tmp_path / split / "images" / "b.png")
        Image.fromarray(_mask(label=2)).save(tmp_path / split / "masks" / "b.png")  # 2 >= 2 classes
    with pytest.warns(UserWarning):
        src = open_segmentation(str(tmp_path), "val")
    assert len(src) == 1 and src.classes == ["bg", "cat"] and src.skipped == {"label_out_of_range": 1}
    (tmp_path / "train" / "classes.txt").unlink()
    inferred = open_pairs(tmp_path / "train")  # no classes.txt: the largest label + 1
    assert len(inferred) == 2 and inferred.num_classes == 3 and inferred.skipped == {}
    with pytest.raises(FileNotFoundError, match="images/ and masks/"):
        open_pairs(tmp_path)


def _coded(size=(64, 48)):
    """An image whose red channel encodes the mask label (label * 20), so any geometric op that treats the two
    differently shows up."""
    rng = np.random.default_rng(3)
    mask = rng.integers(0, 5, size=(size[1] // 8, size[0] // 8)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
    img = np.zeros((size[1], size[0], 3), np.uint8)
    img[..., 0] = mask * 50
    return Image.fromarray(img), mask


def test_train_transform_moves_image_and_mask_together_and_keeps_labels():
    img, mask = _coded()
    tf = segmentation_transform((0.0,) * 3, (1.0,) * 3, train=True, crop_size=40, scale=(0.5, 2.0), hflip=0.5)
    torch.manual_seed(0)
    for _ in range(10):
        x, m = tf(img, mask)
        assert x.shape == (3, 40, 40) and m.shape == (40, 40) and m.dtype == torch.int64
        assert set(m.unique().tolist()) <= {0, 1, 2, 3, 4, IGNORE_INDEX}
        inside = m != IGNORE_INDEX
        # away from label edges (bilinear image vs nearest mask) the red channel says the label
        red = (x[0] * 255 / 50).round().long()
        agree = (red[inside] == m[inside]).float().mean()
        assert agree > 0.8, float(agree)
        if (~inside).any():  # padding: image 0 and mask 255 on the same pixels
            assert x[:, ~inside].abs().max() == 0


def test_eval_transform_is_identity_on_geometry_and_collate_pads_with_ignore():
    img, mask = _coded()
    tf = segmentation_transform((0.5,) * 3, (0.5,) * 3, train=False)
    x, m = tf(img, mask)
    assert torch.equal(m, torch.from_numpy(mask).long())
    small = (x[:, :20, :30], m[:20, :30])
    images, masks = pad_collate([(x, m), small])
    assert images.shape == (2, 3, 48, 64) and masks.shape == (2, 48, 64)
    assert (masks[1, 20:] == IGNORE_INDEX).all() and (masks[1, :, 30:] == IGNORE_INDEX).all()
    assert torch.equal(masks[1, :20, :30], m[:20, :30])


def test_digits_segment_source_and_seeded_view():
    src = DigitsSegmentSource("val", size=96, num_scenes=4)
    assert src.num_classes == 11 and src.classes[0] == "background" and src.classes[3] == "2"
    img, mask = src.load(0)
    assert img.size == (96, 96) and mask.max() <= 10
    view = SeededView(SegmentationView(src, segmentation_transform((0.5,) * 3, (0.5,) * 3, train=True, crop_size=64)))
    a, b = view[(64, 64, 1, 123)], view[(64, 64, 1, 123)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(FileNotFoundError, match="digits-segment"):
        open_segmentation("/nonexistent/seg", "train")
