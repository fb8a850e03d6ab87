"""Mobile-Former DETR: the Hungarian matcher against brute force, the set loss, the detector's interface (train /
eval / presets / DetectTask), `mobilevision predict` and the raw ONNX export on a photo."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, generalized_box_iou

import mobilevision
from mobilevision.tasks.detect.detr import (HungarianMatcher, MobileFormerDETR, SetCriterion, brute_force_match,
                                            matching_cost, sine_position_embedding)

SMALL = dict(num_queries=6, token_dim=32, head_chs=32, ffn_dim=64, former_heads=2, bridge_heads=2)


def _random_boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 4) cxcywh boxes inside the unit square."""
    wh = torch.rand(n, 2, generator=gen) * 0.4 + 0.05
    c = wh / 2 + torch.rand(n, 2, generator=gen) * (1 - wh)
    return torch.cat([c, wh], 1)


def _case(q: int, n: int, k: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(q, k, generator=g) * 2
    labels = torch.randint(1, k, (n,), generator=g)
    return logits, _random_boxes(q, g), labels, _random_boxes(n, g)


def _detector(**kw) -> MobileFormerDETR:
    torch.manual_seed(0)
    return mobilevision.create_detector("mobileformer_detr", backbone="mobileformer_26m", num_classes=5,
                                        image_size=64, **{**SMALL, **kw})


# ---------------------------------------------------------------------------------------------- matcher
@pytest.mark.parametrize("q,n", [(3, 1), (4, 2), (5, 3), (6, 3), (6, 6), (5, 5)])
def test_matcher_equals_brute_force_over_permutations(q, n):
    matcher = HungarianMatcher()
    for seed in range(8):
        logits, boxes, labels, tboxes = _case(q, n, 4, seed * 31 + q)
        rows, cols = matcher(logits, boxes, labels, tboxes)
        assert len(rows) == len(cols) == n
        assert len(set(rows.tolist())) == n and sorted(cols.tolist()) == list(range(n))  # one-to-one
        cost = matching_cost(logits, boxes, labels, tboxes)
        got = float(cost[rows, cols].double().sum())
        assert got == pytest.approx(brute_force_match(cost), abs=1e-5)


def test_matcher_beats_a_greedy_assignment_where_greedy_fails():
    """A case built so that the greedy pick of the best pair first is not optimal."""
    cost = torch.tensor([[0.0, 1.0], [0.1, 10.0]])  # greedy takes (0, 0), then (1, 1): 10; optimum (1, 0), (0, 1): 1.1
    assert brute_force_match(cost) == pytest.approx(1.1)
    from scipy.optimize import linear_sum_assignment

    r, c = linear_sum_assignment(cost.numpy())
    assert float(cost[r, c].sum()) == pytest.approx(1.1)


def test_matching_cost_is_detrs_formula():
    logits, boxes, labels, tboxes = _case(4, 3, 5, 0)
    cost = matching_cost(logits, boxes, labels, tboxes)
    i, j = 2, 1
    p = logits.softmax(-1)[i, labels[j]]
    l1 = (boxes[i] - tboxes[j]).abs().sum()
    giou = generalized_box_iou(box_convert(boxes[i:i + 1], "cxcywh", "xyxy"), box_convert(tboxes[j:j + 1], "cxcywh", "xyxy"))
    assert float(cost[i, j]) == pytest.approx(float(-1 * p + 5 * l1 - 2 * giou[0, 0]), abs=1e-6)


def test_matcher_with_no_targets_and_too_many_targets():
    logits, boxes, _, _ = _case(3, 1, 4, 0)
    rows, cols = HungarianMatcher()(logits, boxes, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4))
    assert rows.numel() == cols.numel() == 0
    with pytest.raises(ValueError, match="num_queries"):
        HungarianMatcher()(logits, boxes, torch.ones(4, dtype=torch.int64), _random_boxes(4, torch.Generator()))


# ------------------------------------------------------------------------------------------------- loss
def _outputs(b: int, q: int, k: int, seed: int, levels: int = 2):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, q, k, generator=g), torch.stack([_random_boxes(q, g) for _ in range(b)]))
            for _ in range(levels)]


def _targets(k: int):
    g = torch.Generator().manual_seed(5)
    return [{"labels": torch.tensor([1, k - 1, 2]), "boxes": _random_boxes(3, g)},
            {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
            {"labels": torch.tensor([3]), "boxes": _random_boxes(1, g)}]


def test_loss_is_invariant_to_permuting_the_queries():
    crit, k = SetCriterion(6), 6
    outputs, targets = _outputs(3, 7, k, 0), _targets(k)
    ref = crit(outputs, targets)
    for seed in range(3):
        perm = torch.randperm(7, generator=torch.Generator().manual_seed(seed))
        permuted = [(lg[:, perm], bx[:, perm]) for lg, bx in outputs]
        got = crit(permuted, targets)
        for key in ref:
            torch.testing.assert_close(got[key], ref[key])
    # but it does depend on which query predicts what: swapping boxes between queries only changes it
    swapped = [(lg, bx[:, torch.roll(torch.arange(7), 1)]) for lg, bx in outputs]
    assert not torch.allclose(crit(swapped, targets)["classification"] + crit(swapped, targets)["bbox_regression"],
                              ref["classification"] + ref["bbox_regression"])


def test_loss_terms_match_detr_on_a_hand_checked_case():
    k = 4
    crit = SetCriterion(k)
    tboxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])
    targets = [{"labels": torch.tensor([2, 3]), "boxes": tboxes}]
    logits = torch.randn(1, 3, k)
    boxes = torch.tensor([[[0.72, 0.6, 0.3, 0.4], [0.5, 0.5, 0.1, 0.1], [0.3, 0.31, 0.2, 0.2]]])
    out = crit([(logits, boxes)], targets)
    # the obvious matching: query 2 -> target 0, query 0 -> target 1, query 1 -> no-object (class 0, weight 0.1)
    target_classes = torch.tensor([[3, 0, 2]])
    w = torch.tensor([0.1, 1.0, 1.0, 1.0])
    ce = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=w)
    l1 = ((boxes[0, 2] - tboxes[0]).abs().sum() + (boxes[0, 0] - tboxes[1]).abs().sum()) / 2
    xy = lambda b: box_convert(b, "cxcywh", "xyxy")  # noqa: E731
    giou = (2 - generalized_box_iou(xy(boxes[0, [2, 0]]), xy(tboxes)).diag().sum()) / 2
    torch.testing.assert_close(out["ce"], ce)
    torch.testing.assert_close(out["l1"], l1)
    torch.testing.assert_close(out["giou"], giou)
    torch.testing.assert_close(out["classification"], ce)
    torch.testing.assert_close(out["bbox_regression"], 5 * l1 + 2 * giou)
    # two outputs (an aux one): the terms are summed
    two = crit([(logits, boxes), (logits, boxes)], targets)
    torch.testing.assert_close(two["bbox_regression"], 2 * (5 * l1 + 2 * giou))


def test_loss_rejects_background_labels():
    with pytest.raises(ValueError, match="1..5"):
        SetCriterion(6)(_outputs(1, 4, 6, 0, 1), [{"labels": torch.tensor([0]), "boxes": _random_boxes(1, torch.Generator())}])


# -------------------------------------------------------------------------------------------- detector
def test_sine_position_embedding_layout():
    pe = sine_position_embedding(3, 5, 8)
    assert pe.shape == (1, 8, 3, 5)
    assert torch.allclose(pe[0, :4, :, 0], pe[0, :4, :, 4])  # the first half encodes y only
    assert torch.allclose(pe[0, 4:, 0], pe[0, 4:, 2])  # the second half x only
    assert not torch.allclose(pe[0, :4, 0], pe[0, :4, 1])


def test_detector_outputs_every_block_and_eval_dicts():
    model = _detector(blocks=(1, 1, 2)).eval()
    assert model.levels == [32, 16, 8]
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        outs = model.forward_outputs(x)
        dets = model(x)
        boxes, scores = model.forward_raw(x)
    assert len(outs) == 4  # one (logits, boxes) per head block: the aux outputs and the final one
    for logits, bx in outs:
        assert logits.shape == (2, 6, 5) and bx.shape == (2, 6, 4)
        assert bx.min() >= 0 and bx.max() <= 1
    assert boxes.shape == (2, 6, 4) and scores.shape == (2, 6, 5)
    torch.testing.assert_close(scores.sum(-1), torch.ones(2, 6))
    assert len(dets) == 2
    d = dets[0]
    assert d["boxes"].shape == (6 * 4, 4) and d["scores"].shape == d["labels"].shape == (24,)  # Q x K pairs
    assert (d["scores"][:-1] >= d["scores"][1:]).all() and d["labels"].min() >= 1 and d["labels"].max() <= 4
    assert (d["boxes"][:, 2] >= d["boxes"][:, 0]).all() and d["boxes"][:, [0, 2]].max() <= 96
    assert d["boxes"][:, [1, 3]].max() <= 64
    # the top detection is the best (query, class) pair of the raw scores, its box that query's
    q, c = divmod(int(scores[0, :, 1:].argmax()), 4)
    assert int(d["labels"][0]) == c + 1 and torch.equal(d["boxes"][0], boxes[0, q])


def test_train_step_freezes_backbone_batchnorm_and_trains_the_head():
    model = _detector().train()
    bn = model.frozen_bn[0]
    assert model.frozen_bn and not bn.training and not bn.weight.requires_grad
    stats = bn.running_mean.clone()
    x = torch.rand(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0], [0.0, 0.0, 8.0, 8.0]]), "labels": torch.tensor([1, 4])}]
    losses = model(x, targets)
    assert set(losses) == {"classification", "bbox_regression", "ce", "l1", "giou"}
    (losses["classification"] + losses["bbox_regression"]).backward()
    assert torch.equal(bn.running_mean, stats)  # frozen statistics
    assert bn.weight.grad is None
    assert model.queries.grad is not None and model.queries.grad.abs().sum() > 0
    assert model.blocks[2][0].mobile.act.fc2.weight.grad.abs().sum() > 0  # the spatial DY-ReLU learns
    assert any(p.grad is not None for n, p in model.backbone.named_parameters() if "conv" in n)  # not frozen
    frozen = _detector(freeze_backbone=True)
    assert not any(p.requires_grad for p in frozen.backbone.parameters())


def test_head_spatial_dyrelu_weights_sum_to_one_over_the_queries():
    model = _detector().eval()
    seen = {}
    act = model.blocks[2][0].mobile.act
    orig = act.mixing_weights
    act.mixing_weights = lambda logits, size: seen.setdefault("w", orig(logits, size))
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    w = seen["w"]
    assert w.shape == (1, 6, 8, 8)  # the 1/8 level of a 64 px image, one weight per query
    torch.testing.assert_close(w.sum(1), torch.ones(1, 8, 8))


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="Mobile-Former backbone"):
        mobilevision.create_detector("mobileformer_detr", backbone="mobilenetv2_100", num_classes=3)
    with pytest.raises(ValueError, match="levels"):
        mobilevision.create_detector("mobileformer_detr", backbone="mobileformer_26m", num_classes=3, levels=(64,))
    with pytest.raises(ValueError, match="blocks"):
        _detector(blocks=(1, 1))
    with pytest.raises(ValueError, match="no-object"):
        mobilevision.create_detector("mobileformer_detr", backbone="mobileformer_26m", num_classes=1)


def test_presets_are_registered_and_known_as_detectors():
    from mobilevision.train.recipe import TASK_OF_FAMILY, infer_task

    names = mobilevision.list_models("mobileformer_detr*")
    assert len(names) == 7 and "mobileformer_detr_508m" in names
    assert infer_task("mobileformer_detr_96m", "digits-detect") == TASK_OF_FAMILY["mobileformer_detr"] == "detect"
    model = mobilevision.create_model("mobileformer_detr_26m", num_classes=11, **SMALL)
    assert isinstance(model, MobileFormerDETR) and model.num_classes == 11
    assert model.data_config.input_size == (3, 800, 1333)
    assert model.backbone.model.model_name == "mobileformer_26m"


@pytest.mark.slow
def test_detect_task_trains_and_saves_it(tmp_path):
    from types import SimpleNamespace

    from mobilevision.tasks.detect.task import DetectTask

    task = DetectTask("mobileformer_detr_26m", iou_crop=False, photometric=False)
    recipe = SimpleNamespace(input_size=64, hflip=0.0, verify_images=True, model_kwargs=dict(SMALL), drop_path_rate=0.0)
    data = task.build_data("digits-detect", recipe)
    model = task.build_model(recipe, data)
    assert isinstance(model, MobileFormerDETR) and model.num_classes == 11
    batch = data.collate([data.val[i] for i in range(2)])
    out = task.train_step(model, batch, torch.device("cpu"))
    assert out["loss"] > 0 and out["loss"].requires_grad
    torch.testing.assert_close(out["loss"], out["classification"] + out["bbox_regression"])
    from torch.utils.data import DataLoader, Subset

    metrics = task.evaluate(model, DataLoader(Subset(data.val, range(2)), batch_size=2, collate_fn=data.collate),
                            torch.device("cpu"))
    assert 0 <= metrics["map_50"] <= 1
    task.save(model, tmp_path / "best", {"epoch": 1})
    cfg = json.loads((tmp_path / "best" / "config.json").read_text())
    assert cfg["model"] == "mobileformer_detr_26m" and cfg["overrides"]["num_queries"] == 6
    restored = mobilevision.create_model("mobileformer_detr_26m", checkpoint_path=tmp_path / "best").eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored.forward_raw(batch[0])[1], model.forward_raw(batch[0])[1])


# ---------------------------------------------------------------------------------------- predict / ONNX
def _photo_tensor(h: int, w: int) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    img = Image.fromarray(skimage_data.astronaut()).resize((w, h), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float()[None] / 255


def test_predict_draws_its_detections(tmp_path, capsys):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from mobilevision.cli import main

    photo = tmp_path / "coffee.png"
    Image.fromarray(skimage_data.coffee()).save(photo)  # 400 x 600
    model = mobilevision.create_model("mobileformer_detr_26m", num_classes=11, **SMALL)
    model.data_config = model.data_config.replace(input_size=(3, 96, 96))
    mobilevision.save_pretrained(model, tmp_path / "det", labels=[f"digit{i}" for i in range(10)])
    assert main(["predict", "mobileformer_detr_26m", str(photo), "--checkpoint", str(tmp_path / "det"),
                 "--save-dir", str(tmp_path / "out"), "--score-thresh", "0.0", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    drawn = np.asarray(Image.open(row["drawn"]).convert("RGB")).astype(int)
    assert drawn.shape == (400, 600, 3)
    dets = row["detections"]
    assert len(dets) == 6 * 10  # every (query, class) pair at threshold 0
    assert {d["label"] for d in dets} <= {f"digit{i}" for i in range(10)}
    boxes = np.array([d["box_xyxy"] for d in dets])
    assert boxes[:, [0, 2]].max() <= 600 + 1e-3 and boxes[:, [1, 3]].max() <= 400 + 1e-3
    assert np.abs(drawn - skimage_data.coffee().astype(int)).sum() > 0  # boxes were drawn on it


@pytest.mark.slow
def test_onnx_raw_export_matches_pytorch_on_a_photo(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from mobilevision.deploy.export import export_form
    from mobilevision.tasks.detect.export import RawDetector

    model = _detector().eval()
    wrapper = export_form(model)
    assert isinstance(wrapper, RawDetector)
    x = _photo_tensor(96, 128)
    path = tmp_path / "detr.onnx"
    torch.onnx.export(wrapper, (x,), str(path), dynamo=True, input_names=["images"], output_names=["boxes", "scores"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref_boxes, ref_scores = model.forward_raw(x)
    assert boxes.shape == (1, 6, 4) and scores.shape == (1, 6, 5)
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(boxes, ref_boxes.numpy(), atol=1e-4, rtol=0)  # pixels of a 128 px wide input


def test_reference_boxes_start_at_the_anchors_and_refine_block_by_block():
    model = _detector(reference_boxes=True).eval()
    with torch.no_grad():
        outs = model.forward_outputs(torch.rand(1, 3, 64, 64))
    anchors = model.ref_logits.sigmoid()
    torch.testing.assert_close(outs[0][1][0], anchors)  # zero-initialised offsets: the first boxes are the anchors
    with torch.no_grad():
        model.box_head[-1].bias.copy_(torch.tensor([0.5, 0.0, 0.0, 0.0]))
        outs = model.forward_outputs(torch.rand(1, 3, 64, 64))
    # every block adds the same logit offset to the previous block's boxes
    cx = torch.stack([o[1][0, :, 0] for o in outs])
    torch.testing.assert_close(torch.logit(cx[1:]) - torch.logit(cx[:-1]), torch.full_like(cx[1:], 0.5))
    with pytest.raises(ValueError, match="divisible by 8"):
        _detector(reference_boxes=True, token_dim=36, former_heads=2, ffn_dim=72)


def test_two_stage_queries_start_from_the_best_dense_proposals():
    model = _detector(reference_boxes=True, prior_scale=1.0, two_stage=True).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        outs, (plog, pbox) = model._forward(x)
    assert plog.shape == (2, 64, 5) and pbox.shape == (2, 64, 4)  # one proposal per cell of the 8 x 8 (1/8) map
    # zero-initialised offsets: proposal boxes are the cell anchors, centres on the cell grid
    torch.testing.assert_close(pbox[0, 9], torch.tensor([1.5 / 8, 1.5 / 8, 0.1, 0.1]))
    with torch.no_grad():
        model.box_head[-1].weight.zero_()
        model.box_head[-1].bias.zero_()
        outs, (plog, pbox) = model._forward(x)
    best = plog.softmax(-1)[..., 1:].amax(-1).topk(6, dim=1).indices  # the 6 queries' cells
    first = outs[0][1]  # zero box offsets: the first block's boxes are the chosen proposals
    torch.testing.assert_close(first, pbox.gather(1, best[..., None].expand(-1, -1, 4)), atol=1e-4, rtol=0)
    model.train()
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([2])}] * 2
    losses = model(x, targets)
    (losses["classification"] + losses["bbox_regression"]).backward()
    assert model.prop_cls.weight.grad.abs().sum() > 0  # the proposals are trained by the set loss too
    with pytest.raises(ValueError, match="reference_boxes=True"):
        _detector(two_stage=True)


def test_dense_proposal_loss_assigns_cells_inside_boxes_to_the_smallest():
    from mobilevision.tasks.detect.detr import dense_proposal_loss

    centres = torch.tensor([[0.02, 0.02], [0.3, 0.3], [0.5, 0.5], [0.9, 0.9]])
    big = torch.tensor([0.35, 0.35, 0.6, 0.6])  # xyxy 0.05..0.65: holds cells 1 and 2
    small = torch.tensor([0.5, 0.5, 0.2, 0.2])  # holds cell 2 only: it wins there
    targets = [{"labels": torch.tensor([3, 1]), "boxes": torch.stack([big, small])}]
    logits = torch.randn(1, 4, 4)
    boxes = torch.rand(1, 4, 4) * 0.3 + 0.2
    w = torch.tensor([0.1, 1.0, 1.0, 1.0])
    cls, box = dense_proposal_loss(logits, boxes, centres, targets, w)
    want = F.cross_entropy(logits.transpose(1, 2), torch.tensor([[0, 3, 1, 0]]), weight=w)
    torch.testing.assert_close(cls, want)
    tgt = torch.stack([big, small])
    xy = lambda b: box_convert(b, "cxcywh", "xyxy")  # noqa: E731
    l1 = (boxes[0, 1:3] - tgt).abs().sum() / 2
    giou = (2 - generalized_box_iou(xy(boxes[0, 1:3]), xy(tgt)).diag().sum()) / 2
    torch.testing.assert_close(box, 5 * l1 + 2 * giou)
    model = _detector(reference_boxes=True, two_stage=True, dense_proposals=True).train()
    losses = model(torch.rand(1, 3, 64, 64), [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 40.0]]), "labels": torch.tensor([2])}])
    (losses["classification"] + losses["bbox_regression"]).backward()
    assert model.prop_cls.weight.grad.abs().sum() > 0
