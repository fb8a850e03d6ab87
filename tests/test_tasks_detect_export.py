"""ONNX export of SSDLite: raw boxes + scores (no NMS) and NMS inside, checked with onnxruntime on a photo."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mobilevision
from mobilevision.tasks.detect.export import NMSDetector, RawDetector

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _photo(size: int) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    img = Image.fromarray(skimage_data.astronaut()).resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float()[None] / 255


def _model() -> torch.nn.Module:
    torch.manual_seed(1)  # a seed whose tied scores do not straddle the NMS threshold (ties break arbitrarily)
    model = mobilevision.create_model("ssdlite320_mobilenetv3_large_100", num_classes=5).eval()
    with torch.no_grad():  # distinct scores so NMS has real work
        for block in model.head.classification_head.module_list:
            block[1].weight.mul_(10)
            block[1].bias.normal_()
    return model


def _max_rank(proto) -> int:
    inferred = onnx.shape_inference.infer_shapes(proto)
    ranks = [len(v.type.tensor_type.shape.dim) for v in list(inferred.graph.value_info) + list(inferred.graph.output)]
    return max(ranks)


@pytest.mark.slow
@pytest.mark.parametrize("size", [320, 256])
def test_onnx_raw_and_nms(tmp_path, size):
    model = _model()
    x = _photo(size)
    raw_path = tmp_path / "raw.onnx"
    torch.onnx.export(RawDetector(model).eval(), (x,), str(raw_path), dynamo=True, input_names=["images"],
                      output_names=["boxes", "scores"])
    sess = ort.InferenceSession(str(raw_path), providers=["CPUExecutionProvider"])
    boxes, scores = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref_boxes, ref_scores = model.forward_raw(x)
        ref_det = model(x)[0]
    np.testing.assert_allclose(boxes, ref_boxes.numpy(), atol=1e-3, rtol=0)
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4, rtol=0)
    assert _max_rank(onnx.load(str(raw_path))) <= 5

    nms_path = tmp_path / "nms.onnx"
    torch.onnx.export(NMSDetector(model).eval(), (x,), str(nms_path), dynamo=True, input_names=["images"],
                      output_names=["boxes", "scores", "labels"])
    proto = onnx.load(str(nms_path))
    assert any(n.op_type == "NonMaxSuppression" for n in proto.graph.node)
    assert _max_rank(proto) <= 5
    sess = ort.InferenceSession(str(nms_path), providers=["CPUExecutionProvider"])
    b, s, lab = sess.run(None, {"images": x.numpy()})
    assert len(b) == len(ref_det["boxes"]) > 5
    from test_tasks_detect import _assert_same_detections

    _assert_same_detections({"boxes": torch.from_numpy(b), "scores": torch.from_numpy(s),
                             "labels": torch.from_numpy(lab)}, ref_det, box_tol=1e-3, score_tol=1e-4)
