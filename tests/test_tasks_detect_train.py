"""DetectTask through the Task protocol: train steps learn, evaluate gives COCO numbers, save restores, the
trivial baseline is measured, `mobilevision eval` gives the task's numbers."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

import mobilevision
from mobilevision.tasks.detect.metrics import mean_box_baseline
from mobilevision.tasks.detect.task import DetectTask


def _recipe(**kw):
    base = dict(input_size=128, hflip=0.0, verify_images=True, model_kwargs={}, drop_path_rate=0.0)
    base.update(kw)
    return SimpleNamespace(**base)


def test_task_learns_evaluates_and_saves(tmp_path):
    torch.manual_seed(0)
    task = DetectTask("ssdlite_mobilevit_xxs", iou_crop=False, photometric=False)
    recipe = _recipe()
    data = task.build_data("digits-detect", recipe)
    assert data.info["num_classes"] == 11 and data.info["labels"][0] == "0"
    model = task.build_model(recipe, data)
    batch = data.collate([data.val[i] for i in range(4)])  # val: no random augmentation, a fixed batch
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    first = None
    for _ in range(25):
        out = task.train_step(model, batch, torch.device("cpu"))
        assert set(out) == {"loss", "bbox_regression", "classification"}
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else float(out["loss"])
    assert float(out["loss"]) < 0.5 * first
    loader = DataLoader(Subset(data.val, range(4)), batch_size=2, collate_fn=data.collate)
    metrics = task.evaluate(model, loader, torch.device("cpu"))
    assert task.metric in metrics and 0 <= metrics["map_50"] <= 1 and "ap/7" in metrics
    task.save(model, tmp_path / "best", {"epoch": 1})
    cfg = json.loads((tmp_path / "best" / "config.json").read_text())
    assert cfg["task"] == "detect" and cfg["num_classes"] == 11 and cfg["labels"][:2] == ["0", "1"]
    restored = mobilevision.create_model("ssdlite_mobilevit_xxs", checkpoint_path=tmp_path / "best").eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored.forward_raw(batch[0])[1], model.forward_raw(batch[0])[1])
    # `mobilevision eval` restores the run's checkpoint at its size and gives the task's numbers on the val split
    from mobilevision.cli import main

    assert cfg["data_config"]["input_size"] == [3, 128, 128]  # the size it trained at, not the preset's 320
    assert main(["eval", "--model", "ssdlite_mobilevit_xxs", "--checkpoint", str(tmp_path / "best"), "--data",
                 "digits-detect", "--batch-size", "50", "--output", str(tmp_path / "e.json")]) == 0
    got = json.loads((tmp_path / "e.json").read_text())
    full = task.evaluate(model, DataLoader(data.val, batch_size=50, collate_fn=data.collate), torch.device("cpu"))
    assert got["images"] == 200 and got["map_50"] == pytest.approx(full["map_50"]) and got["map"] == pytest.approx(full["map"])
    assert full["map_50"] > 0.0  # the 25 steps on four val scenes find some of their digits


def test_task_on_any_backbone_and_coco_folder(tmp_path):
    from test_data_detection import make_coco

    make_coco(tmp_path, "train")
    make_coco(tmp_path, "val", broken=False)
    task = DetectTask("mobilenetv3_large_100")
    recipe = _recipe(input_size=96, hflip=0.5)
    data = task.build_data(str(tmp_path), recipe)
    assert data.skipped == {"train_box_clipped_to_image": 1, "train_zero_area_box_dropped": 1,
                            "train_missing_image": 1, "train_unreadable_image": 1}
    model = task.build_model(recipe, data)
    assert model.num_classes == 3 and model.detector_config["backbone"] == "mobilenetv3_large_100"
    loader = DataLoader(data.train, batch_size=3, collate_fn=data.collate)
    for batch in loader:  # one epoch
        task.train_step(model, batch, torch.device("cpu"))["loss"].backward()
    assert "map" in task.evaluate(model, DataLoader(data.val, batch_size=3, collate_fn=data.collate), torch.device("cpu"))


def test_mean_box_baseline_scores_only_what_it_overlaps():
    class Boxes:
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def annotations(self, i):
            return np.array(self.rows[i][0], np.float32), np.array(self.rows[i][1])

    train = Boxes([([[10, 10, 30, 50]], [2]), ([[30, 10, 50, 50], [0, 0, 5, 5]], [2, 1])])  # mean (13.3, 6.7, 28.3, 35)
    hit = Boxes([([[13, 7, 28, 35]], [2])])  # IoU with the mean box > 0.9, and the most frequent class
    miss = Boxes([([[60, 60, 90, 90]], [2])])
    assert mean_box_baseline(train, hit, 3)["map_50"] == pytest.approx(1.0)
    assert mean_box_baseline(train, miss, 3)["map_50"] == 0.0
