"""`mobilevision predict` on detectors (boxes drawn, detections listed) and segmenters (palette mask + overlay)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import mobilevision
from mobilevision.cli import main


@pytest.fixture()
def photo(tmp_path):
    import skimage.data

    path = tmp_path / "coffee.png"
    Image.fromarray(skimage.data.coffee()).save(path)  # 400 x 600
    return path


def test_detector_predict_draws_and_lists_boxes_in_image_pixels(tmp_path, photo, capsys):
    torch.manual_seed(0)
    model = mobilevision.create_model("ssdlite_mobilevit_xxs", num_classes=11)
    labels = [f"digit{i}" for i in range(10)]
    mobilevision.save_pretrained(model, tmp_path / "det", labels=labels)
    code = main(["predict", "ssdlite_mobilevit_xxs", str(photo), "--checkpoint", str(tmp_path / "det"),
                 "--save-dir", str(tmp_path / "out"), "--score-thresh", "0.0", "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and Image.open(rows[0]["drawn"]).size == (600, 400)
    dets = rows[0]["detections"]
    assert dets, "score threshold 0 keeps the detector's top boxes"
    assert {d["label"] for d in dets} <= set(labels)
    boxes = np.array([d["box_xyxy"] for d in dets])
    assert boxes[:, [0, 2]].max() <= 600 + 1e-3 and boxes[:, [1, 3]].max() <= 400 + 1e-3
    assert boxes[:, [0, 2]].max() > 320  # scaled back from the 320 px input to the photo's own pixels


def test_segmenter_predict_writes_mask_at_image_size_and_overlay(tmp_path, photo, capsys):
    torch.manual_seed(0)
    model = mobilevision.create_model("lraspp_mobilenetv3_large_100", num_classes=11)
    mobilevision.save_pretrained(model, tmp_path / "seg", labels=["background", *map(str, range(10))])
    # no NAME: the saved config.json says which model it is
    code = main(["predict", str(photo), "--checkpoint", str(tmp_path / "seg"), "--save-dir", str(tmp_path / "out"),
                 "--json"])
    assert code == 0
    row = json.loads(capsys.readouterr().out)[0]
    mask = np.asarray(Image.open(row["mask"]))
    assert mask.shape == (400, 600) and mask.max() <= 10
    assert Image.open(row["mask"]).mode == "P"  # palette PNG
    assert Image.open(row["overlay"]).size == (600, 400)
    assert sum(row["pixels"].values()) == 400 * 600


@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    ["ssdlite_mobilevit_xxs", "--num-classes", "11"],
    ["ssdlite_mobilevit_xxs", "--num-classes", "11", "--no-nms"],
    ["lraspp_mobilenetv3_large_100", "--num-classes", "11", "--dynamic", "--size", "96", "128"],
])
def test_export_task_models_checks_onnxruntime(tmp_path, capsys, argv):
    out = tmp_path / "m.onnx"
    assert main(["export", *argv, "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "max abs diff" in text and "max tensor rank" in text


def test_predict_takes_images_after_the_options(tmp_path, photo, capsys):
    """`predict NAME --checkpoint C IMG` (the README's order): images may follow the options."""
    model = mobilevision.create_model("mobilenetv3_small_100", num_classes=3)
    mobilevision.save_pretrained(model, tmp_path / "cls", labels=["a", "b", "c"])
    assert main(["predict", "mobilenetv3_small_100", "--checkpoint", str(tmp_path / "cls"), str(photo), str(photo),
                 "--topk", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and all(len(r["top"]) == 2 for r in rows)
    assert main(["predict", "mobilenetv3_small_100", "--checkpoint", str(tmp_path / "cls"), str(photo),
                 "--no-such-flag"]) == 2
