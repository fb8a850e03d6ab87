"""SegmentTask end to end on a VOC folder of real photos with broken entries: trains, evaluates, saves."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

import mobilevision as mv
from mobilevision.tasks.segment.task import SegmentTask, baseline_miou

from test_data_segmentation import make_voc


def test_voc_with_broken_entries_trains_one_epoch_and_reports_skips(tmp_path):
    make_voc(tmp_path / "voc")
    recipe = SimpleNamespace(input_size=64, scale=[0.5, 2.0], hflip=0.5, drop_path_rate=0.0, model_kwargs={})
    task = SegmentTask("lraspp_mobilenetv3_large_100")
    with pytest.warns(UserWarning, match="skipping"):
        data = task.build_data(str(tmp_path / "voc"), recipe)
    assert data.skipped == {f"{s}/{r}": 1 for s in ("train", "val")
                            for r in ("mask_size_mismatch", "label_out_of_range", "missing_mask")}
    assert data.info["num_classes"] == 21
    torch.manual_seed(0)
    model = task.build_model(recipe, data)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for batch in DataLoader(data.train, batch_size=3, shuffle=True, collate_fn=data.collate):
        terms = task.train_step(model, batch, torch.device("cpu"))
        assert set(terms) == {"loss", "loss_out"} and torch.isfinite(terms["loss"])
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    val = DataLoader(data.val, batch_size=2, collate_fn=data.collate)
    metrics = task.evaluate(model, val, torch.device("cpu"))
    assert 0.0 <= metrics["miou"] <= 1.0 and "iou_person" in metrics and model.training
    task.save(model, tmp_path / "out", {"epoch": 1})
    again = mv.create_model("lraspp_mobilenetv3_large_100", checkpoint_path=tmp_path / "out").eval()
    model.eval()
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        torch.testing.assert_close(again(x)["out"], model(x)["out"])
    assert again.labels[15] == "person" and again.num_classes == 21


def test_aux_loss_weighted_and_all_background_baseline():
    task = SegmentTask("x", aux_weight=0.4)
    masks = torch.randint(0, 3, (2, 8, 8))
    out = {"out": torch.randn(2, 3, 8, 8), "aux": torch.randn(2, 3, 8, 8)}
    terms = task.loss(out, masks)
    torch.testing.assert_close(terms["loss"], terms["loss_out"] + 0.4 * terms["loss_aux"])
    masks[0, 0] = 255
    assert torch.isfinite(task.loss(out, masks)["loss"])
    base = baseline_miou([(None, torch.tensor([[[0, 0, 1, 1]]]))], 2)
    assert base == {"miou": pytest.approx(0.25), "pixel_acc": 0.5}


def test_enet_class_weights_favour_rare_classes():
    from mobilevision.tasks.segment.task import enet_weights

    masks = torch.zeros(1, 10, 10, dtype=torch.long)
    masks[0, 0, :5] = 2  # 5 % of the pixels
    masks[0, 9, 9] = 255  # ignored: not counted
    w = enet_weights(masks, 3)
    share = torch.tensor([94 / 99, 0.0, 5 / 99])
    torch.testing.assert_close(w, 1 / torch.log(1.1 + share))
    out = {"out": torch.zeros(1, 3, 10, 10)}
    out["out"][:, 0] = 2.0  # confident background everywhere: the rare class's pixels are all wrong
    plain = SegmentTask("x").loss(out, masks)["loss"]
    weighted = SegmentTask("x", class_weights="enet").loss(out, masks)["loss"]
    assert weighted > plain  # the misclassified rare pixels count more
    with pytest.raises(ValueError, match="class_weights"):
        SegmentTask("x", class_weights="inverse")


def test_digits_scenes_larger_than_the_crop_train_on_crops_and_evaluate_whole():
    from types import SimpleNamespace

    task = SegmentTask("deeplabv3_mobilevit_xxs", scene_size=96, num_scenes={"train": 4, "val": 3})
    data = task.build_data("digits-segment", SimpleNamespace(input_size=64, scale=[1.5, 1.5], hflip=0.0))
    image, mask = data.train[0]
    assert image.shape[-2:] == (64, 64) and mask.shape[-2:] == (64, 64)
    image, mask = data.val[0]
    assert image.shape[-2:] == (96, 96) and mask.shape[-2:] == (96, 96)
    assert 0.0 < data.info["baseline_miou"] < 0.2  # background IoU (~0.97) over 11 classes
