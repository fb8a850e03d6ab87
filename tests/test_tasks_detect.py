"""SSDLite: presets' params/MACs against published_tasks.csv, torchvision parity, loss, raw forward."""
from __future__ import annotations

import csv
from importlib import resources

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mobilevision
from mobilevision.tasks.detect import create_detector

PUBLISHED = resources.files("mobilevision.models").joinpath("published_tasks.csv")  # shared/reference/'s copy
PRESETS = ["ssdlite320_mobilenetv3_large_100", "ssdlite_mobilevit_xxs", "ssdlite_mobilevit_xs",
           "ssdlite_mobilevit_s", "ssdlite_mobilenetv2_100"]


def _rows() -> dict[str, dict]:
    with PUBLISHED.open() as f:
        return {r["model"]: r for r in csv.DictReader(f) if r["task"] == "detect"}


def test_presets_listed_with_family():
    assert mobilevision.list_models("ssdlite*") == sorted(PRESETS)
    info = mobilevision.model_info("ssdlite_mobilevit_xxs")
    assert info["family"] == "ssdlite" and info["input_size"] == (3, 320, 320)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_params_and_macs(name):
    row = _rows()[name]
    with torch.device("meta"):
        model = mobilevision.create_model(name, num_classes=int(row["num_classes"]))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params - float(row["params_m"])) <= float(row["params_tol_pct"]) / 100 * float(row["params_m"]), params
    if row["gmacs"]:
        with FlopCounterMode(display=False) as fc:
            model.eval().forward_raw(torch.rand(1, 3, 320, 320, device="meta"))
        gmacs = fc.get_total_flops() / 2e9
        assert abs(gmacs - float(row["gmacs"])) <= float(row["gmacs_tol_pct"]) / 100 * float(row["gmacs"]), gmacs
        # `mobilevision profile` counts on the meta device through the plain forward: the same core network
        from mobilevision.deploy.profiling import count_on_meta

        _, macs = count_on_meta(lambda: mobilevision.create_model(name, num_classes=int(row["num_classes"])),
                                (3, 320, 320))
        assert macs == pytest.approx(gmacs * 1e9, rel=1e-6)


def _photos(size: int = 320) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    imgs = []
    for name in ("astronaut", "coffee", "chelsea"):
        arr = getattr(skimage_data, name)()[..., :3]
        img = Image.fromarray(arr).resize((size, size), Image.BILINEAR)
        imgs.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(imgs)


def _perturbed_torchvision():
    tv_det = pytest.importorskip("torchvision.models.detection")
    torch.manual_seed(0)
    ref = tv_det.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        # torchvision's head init (N(0, 0.03)) scores every anchor nearly alike, so top-k and NMS would pick
        # among ties; a wider spread of the prediction convs gives distinct scores and real detections
        for head in (ref.head.classification_head, ref.head.regression_head):
            for block in head.module_list:
                block[1].weight.mul_(10 if head is ref.head.classification_head else 3)
    return ref


def test_torchvision_parity(tmp_path):
    ref = _perturbed_torchvision()
    path = tmp_path / "tv_ssdlite.pth"
    torch.save(ref.state_dict(), path)
    ours = mobilevision.create_model("ssdlite320_mobilenetv3_large_100", checkpoint_path=path).eval()
    x = _photos()
    with torch.no_grad():
        ref_feats = list(ref.backbone(ref.transform(list(x))[0].tensors).values())
        ref_head = ref.head(ref_feats)
        ours_head = ours.head_outputs(x)
        ref_det = ref(list(x))
        ours_det = ours(x)
    for key in ("cls_logits", "bbox_regression"):
        torch.testing.assert_close(ours_head[key], ref_head[key], atol=1e-4, rtol=1e-4)
    assert ours_head["anchors"].shape == (3234, 4)
    for r, o in zip(ref_det, ours_det):
        assert len(r["boxes"]) > 10
        assert len(r["boxes"]) == len(o["boxes"])
        torch.testing.assert_close(o["scores"], r["scores"], atol=1e-5, rtol=1e-4)
        _assert_same_detections(o, r)


def _assert_same_detections(ours: dict, ref: dict, box_tol: float = 1e-3, score_tol: float = 1e-5) -> None:
    """The same set of (box, score, label); order may differ only among equal scores, and which of the
    detections tied with the last kept score survive the cut to `detections_per_img` is arbitrary."""
    cut = float(ref["scores"][-1]) + score_tol
    ours = {k: v[ours["scores"] > cut] for k, v in ours.items()}
    ref = {k: v[ref["scores"] > cut] for k, v in ref.items()}
    assert len(ours["boxes"]) == len(ref["boxes"]) > 10
    free = torch.ones(len(ours["boxes"]), dtype=torch.bool)
    for box, score, label in zip(ref["boxes"], ref["scores"], ref["labels"]):
        ok = (free & (ours["labels"] == label) & ((ours["scores"] - score).abs() <= score_tol)
              & ((ours["boxes"] - box).abs().amax(1) <= box_tol))
        assert ok.any(), f"torchvision detection {box.tolist()} {float(score):.5f} {int(label)} not found in ours"
        free[torch.nonzero(ok)[0, 0]] = False


def test_torchvision_keys_wrong_model_is_a_clear_error(tmp_path):
    ref = _perturbed_torchvision()
    state = ref.state_dict()
    state["backbone.features.9.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="torchvision keys"):
        mobilevision.create_model("ssdlite320_mobilenetv3_large_100", checkpoint_path=path)


def _targets():
    return [{"boxes": torch.tensor([[10.0, 20.0, 90.0, 120.0], [150.0, 150.0, 300.0, 310.0]]),
             "labels": torch.tensor([1, 3])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]


def test_loss_matches_torchvision_ssd():
    """Our loss (own code) against torchvision's SSD.compute_loss on the same head outputs."""
    ref = _perturbed_torchvision()
    ours = create_detector(backbone="mobilenetv3_large_100", num_classes=91)
    torch.manual_seed(0)
    out = {"cls_logits": torch.randn(2, 3234, 91), "bbox_regression": torch.randn(2, 3234, 4) * 0.1}
    anchors = ours.anchors(torch.zeros(1, 3, 320, 320), [torch.zeros(1, 1, s, s) for s in (20, 10, 5, 3, 2, 1)])
    ours_loss = ours.compute_loss(_targets(), {**out, "anchors": anchors})
    matched = []
    for t in _targets():
        if t["boxes"].numel() == 0:
            matched.append(torch.full((3234,), -1, dtype=torch.int64))
        else:
            matched.append(ref.proposal_matcher(torchvision_box_iou(t["boxes"], anchors)))
    ref_loss = ref.compute_loss(_targets(), out, [anchors, anchors], matched)
    for key in ("bbox_regression", "classification"):
        torch.testing.assert_close(ours_loss[key], ref_loss[key], atol=1e-5, rtol=1e-5)


def torchvision_box_iou(a, b):
    from torchvision.ops import box_iou

    return box_iou(a, b)


@pytest.mark.parametrize("backbone", ["mobilevit_xxs", "mobilenetv2_100", "convnext_tiny"])
def test_any_backbone_trains_and_detects(backbone):
    torch.manual_seed(0)
    model = create_detector(backbone=backbone, num_classes=4)
    size = 128
    x = torch.rand(2, 3, size, size)
    losses = model(x, _targets_scaled(size))
    assert set(losses) == {"bbox_regression", "classification"}
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        det = model(x)
        boxes, scores = model.forward_raw(x)
    assert len(det) == 2 and det[0]["boxes"].shape[1] == 4
    assert boxes.shape[0] == 2 and boxes.shape[2] == 4 and scores.shape[2] == 4
    torch.testing.assert_close(scores.sum(-1), torch.ones(scores.shape[:2]))
    assert float(boxes.min()) >= 0 and float(boxes.max()) <= size


def _targets_scaled(size: int):
    t = _targets()
    t[0]["boxes"] = t[0]["boxes"] * size / 320
    return t


def test_bad_inputs():
    model = create_detector(backbone="mobilevit_xxs", num_classes=3).eval()
    with pytest.raises(ValueError, match="float images"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="background"):
        create_detector(backbone="mobilevit_xxs", num_classes=1)
    with pytest.raises(ValueError, match="layout"):
        create_detector(backbone="mobilevit_xxs", num_classes=3, layout="yolo")


def test_anchor_ratios_set_the_torchvision_layouts_anchor_sizes_and_redraw_is_digits_only():
    from mobilevision.tasks.detect.task import DetectTask
    from mobilevision.train.recipe import Recipe

    x = torch.rand(1, 3, 192, 192)
    sides = []
    for ratios in ((0.2, 0.95), (0.1, 0.95)):
        det = create_detector("ssdlite", backbone="mobilenetv3_small_100", num_classes=3, anchor_ratios=ratios).eval()
        with torch.no_grad():
            anchors = det.head_outputs(x)["anchors"]
        sides.append(float((anchors[:, 2] - anchors[:, 0]).min()))
    assert sides[1] < sides[0]  # smaller first-map anchors
    # the narrowest box is the ratio-3 one on the first map: min_ratio x side / sqrt(3) wide
    assert sides == pytest.approx([0.2 * 192 / 3 ** 0.5, 0.1 * 192 / 3 ** 0.5], rel=0.01)
    with pytest.raises(ValueError, match="redraw applies to the built-in digits-detect"):
        DetectTask("ssdlite_mobilevit_xxs", {"redraw": True}).build_data("/nonexistent/coco", Recipe(task="detect"))
