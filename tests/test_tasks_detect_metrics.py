"""COCO mAP in memory: perfect, shifted, missing predictions, and a known mixed case."""
import pytest
import torch

from mobilevision.tasks.detect.metrics import COCO_KEYS, coco_map

pytest.importorskip("pycocotools")


def _t(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}


def test_perfect_predictions_score_one():
    tgt = [_t([[10, 10, 60, 80], [100, 100, 200, 150]], [1, 2]), _t([[0, 0, 40, 40]], [1])]
    pred = [{**t, "scores": torch.ones(len(t["labels"]))} for t in tgt]
    out = coco_map(pred, tgt, class_names=["a", "b"])
    assert set(COCO_KEYS) <= set(out)
    assert out["map"] == pytest.approx(1.0) and out["map_50"] == pytest.approx(1.0)
    assert out["ap_per_class"] == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}
    assert out["map_small"] == -1.0  # no small (< 32^2) ground truth box


def test_wrong_class_and_misplaced_boxes():
    tgt = [_t([[10, 10, 110, 110]], [1]), _t([[50, 50, 150, 150]], [2])]
    # image 0: right box, wrong class; image 1: right class, IoU 0.6 (counts at 0.5, not at 0.75)
    pred = [{"boxes": torch.tensor([[10.0, 10, 110, 110]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([2])},
            {"boxes": torch.tensor([[50.0, 50, 150, 110]]), "scores": torch.tensor([0.8]), "labels": torch.tensor([2])}]
    out = coco_map(pred, tgt)
    assert out["ap_per_class"]["1"] == 0.0
    assert out["map_50"] == pytest.approx(0.5 * (0.0 + 0.5), abs=0.02)  # class 2: precision 1/2 at recall 1
    assert out["map_75"] == pytest.approx(0.0)


def test_no_predictions_and_length_mismatch():
    tgt = [_t([[10, 10, 60, 80]], [1])]
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}]
    assert coco_map(empty, tgt)["map"] == 0.0
    with pytest.raises(ValueError, match="one of each"):
        coco_map(empty * 2, tgt)
