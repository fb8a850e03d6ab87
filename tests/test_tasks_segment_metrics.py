"""Confusion-matrix mIoU, pixel accuracy, per-class IoU."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mobilevision.tasks.segment.metrics import ConfusionMatrix


def test_hand_computed_example_with_ignore():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 1, 2]])
    cm = ConfusionMatrix(3)
    cm.update(pred[None], target[None])
    # class 0: tp 1, fp 1 (the 2 predicted 0), fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2
    res = cm.compute()
    assert res["iou"] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert res["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert res["pixel_acc"] == pytest.approx(4 / 6)
    assert int(cm.matrix.sum()) == 6  # the two 255 pixels are not counted


def test_logits_accepted_absent_class_is_nan_and_left_out():
    cm = ConfusionMatrix(4)
    logits = torch.zeros(1, 4, 2, 2)
    logits[0, 1] = 1.0  # predicts class 1 everywhere
    cm.update(logits, torch.ones(1, 2, 2, dtype=torch.long))
    res = cm.compute()
    assert res["iou"][1] == 1.0 and math.isnan(res["iou"][3]) and res["miou"] == 1.0


def test_summing_matrices_equals_one_pass():
    torch.manual_seed(0)
    p, t = torch.randint(0, 5, (4, 8, 8)), torch.randint(0, 5, (4, 8, 8))
    whole, a, b = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    whole.update(p, t)
    a.update(p[:2], t[:2])
    b.update(p[2:], t[2:])
    a.matrix += b.matrix  # what all_reduce does across ranks
    assert torch.equal(a.matrix, whole.matrix)
    a.all_reduce()  # no process group: unchanged
    assert a.compute() == whole.compute()


def test_bad_labels_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="0..2 or 255"):
        cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))
    with pytest.raises(ValueError, match="differ in shape"):
        cm.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))


def test_stride_oracle_is_exact_at_stride_1_and_on_cell_aligned_regions_and_loses_thin_lines():
    from mobilevision.data.digits_scenes import DigitsScenes
    from mobilevision.tasks.segment.metrics import stride_oracle

    scenes = [DigitsScenes("val", size=96)[i].mask for i in range(3)]
    assert stride_oracle(scenes, 11, 1)["miou"] == pytest.approx(1.0)
    stripes = np.zeros((16, 16), np.uint8)  # bands on the 4-px cell grid (corners of blocks would blur)
    stripes[4:8] = 1
    stripes[12:16] = 2
    stripes[0, 0] = 255  # ignored
    assert stride_oracle([stripes], 3, 4)["miou"] == pytest.approx(1.0)
    line = np.zeros((32, 32), np.uint8)
    line[:, 10] = 1  # one pixel wide: never the majority of an 8 x 8 cell
    res = stride_oracle([line], 2, 8)
    assert res["miou"] == pytest.approx(0.5 * (1 - 32 / 1024)) and res["pixel_acc"] == pytest.approx(1 - 32 / 1024)
    coarse, fine = (stride_oracle(scenes, 11, s)["miou"] for s in (16, 8))
    assert coarse < fine < 1.0
