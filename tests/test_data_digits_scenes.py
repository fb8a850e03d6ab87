"""The built-in digits scenes: deterministic, boxes tight around the mask strokes, train / val disjoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mobilevision.data.digits_scenes import DigitsScenes, _digit_scans


def test_scene_is_a_pure_function_of_split_index_and_seed():
    a, b = DigitsScenes("train", size=96), DigitsScenes("train", size=96)
    s1, s2 = a[7], b[7]
    assert np.array_equal(np.asarray(s1.image), np.asarray(s2.image))
    assert np.array_equal(s1.mask, s2.mask) and np.array_equal(s1.boxes, s2.boxes)
    other = DigitsScenes("train", size=96, seed=1)[7]
    assert not np.array_equal(np.asarray(other.image), np.asarray(s1.image))


def test_boxes_are_tight_around_their_strokes_and_no_stroke_lies_outside():
    scenes = DigitsScenes("val", size=128)
    for i in range(20):
        s = scenes[i]
        assert s.mask.shape == (128, 128) and s.image.size == (128, 128)
        assert len(s.boxes) == len(s.labels) >= 1
        covered = np.zeros_like(s.mask, bool)
        for (x0, y0, x1, y1), label in zip(s.boxes.astype(int), s.labels):
            region = s.mask[y0:y1, x0:x1] == label + 1
            ys, xs = np.nonzero(region)
            assert ys.min() == 0 and xs.min() == 0, (i, label)
            assert ys.max() == y1 - y0 - 1 and xs.max() == x1 - x0 - 1, (i, label)
            covered[y0:y1, x0:x1] = True
        assert not (s.mask[~covered] > 0).any()
        assert set(np.unique(s.mask)) <= {0} | {int(v) + 1 for v in s.labels}


def test_train_and_val_use_disjoint_digit_scans():
    train, _ = _digit_scans("train")
    val, _ = _digit_scans("val")
    assert len(train) + len(val) == 1797
    train_keys = {t.tobytes() for t in train}
    shared = sum(v.tobytes() in train_keys for v in val)
    assert shared == 0


def test_splits_differ_and_bad_arguments_raise():
    assert not np.array_equal(np.asarray(DigitsScenes("train", size=64)[0].image),
                              np.asarray(DigitsScenes("val", size=64)[0].image))
    with pytest.raises(ValueError, match="split"):
        DigitsScenes("test")
    with pytest.raises(IndexError):
        DigitsScenes("val", size=64)[200]


def test_redrawn_train_scenes_follow_the_seeded_global_rng_and_keep_the_fixed_layout_for_annotations():
    from mobilevision.data.datasets import SeededView, seeded
    from mobilevision.data.detection import DigitsDetect, detection_transform

    fixed, redrawn = DigitsScenes("train", size=96), DigitsScenes("train", size=96, redraw=True)
    with seeded(5):
        a = redrawn[3]
    with seeded(5):
        b = redrawn[3]
    with seeded(6):
        c = redrawn[3]
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))  # another epoch, another layout
    assert not np.array_equal(np.asarray(a.image), np.asarray(fixed[3].image))
    assert np.array_equal(redrawn.draw(3).boxes, fixed[3].boxes)
    det = DigitsDetect("train", detection_transform(96, True, iou_crop=False, hflip=False, photometric=False),
                       size=96, redraw=True)
    assert np.array_equal(det.annotations(3)[0], fixed[3].boxes)  # the mean-box baseline reads the fixed scenes
    view = SeededView(det)
    img1, t1 = view[(96, 96, 3, 11)]
    img2, t2 = view[(96, 96, 3, 11)]
    assert torch.equal(img1, img2) and torch.equal(t1["boxes"], t2["boxes"])
    with pytest.raises(ValueError, match="val scenes stay fixed"):
        DigitsScenes("val", redraw=True)


def test_digits_on_photos_pastes_each_scan_of_its_split_on_photo_crops():
    from mobilevision.data.datasets import open_datasets
    from mobilevision.data.digits_scenes import DigitsOnPhotos
    from mobilevision.train.recipe import default_recipe

    train, val = open_datasets("digits-photos", image_size=48)
    scans, labels = _digit_scans("train")
    assert len(train) == 4 * len(scans) and len(val) == len(_digit_scans("val")[0])
    assert train.classes == [str(d) for d in range(10)]
    img, label = train.load(len(scans) + 5)  # the second copy of scan 5: same digit, other photo and place
    first, label_first = train.load(5)
    assert label == label_first == int(labels[5]) and img.size == (48, 48) and img.mode == "RGB"
    assert not np.array_equal(np.asarray(img), np.asarray(first))
    again, _ = DigitsOnPhotos("train", 48).load(5)
    assert np.array_equal(np.asarray(again), np.asarray(first))  # a pure function of (split, index, seed)
    pix = np.asarray(first, np.float32)
    assert pix.std() > 10  # a photo behind the digit, not a flat canvas
    with pytest.raises(IndexError):
        train.load(len(train))
    with pytest.raises(ValueError, match="copies"):
        DigitsOnPhotos("train", copies=0)
    assert default_recipe("mobilenetv3_large_100", "digits-photos")[0] == "digits_photos"
