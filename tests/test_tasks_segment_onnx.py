"""ONNX export of every segmentation head with dynamic H / W, checked with onnxruntime at two sizes, one of
which neither the output stride nor the image-pooling branch divides evenly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mobilevision as mv
from mobilevision.tasks.segment.model import LogitsOnly

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

FAST = ["lraspp_mobilenetv3_large_100", "deeplabv3_mobilevit_xxs", "fpn_poolformer_s12"]
SLOW = ["deeplabv3_mobilenetv3_large_100", "deeplabv3_mobilevit_xs", "deeplabv3_mobilevit_s",
        "deeplabv3_mobilenetv2_100", "fpn_convnextv2_atto"]


def _export_and_compare(name: str, tmp_path) -> None:
    from torch.export import Dim

    torch.manual_seed(0)
    model = LogitsOnly(mv.create_model(name, num_classes=5)).eval()
    path = tmp_path / f"{name}.onnx"
    # traced at batch 2 and H != W so torch.export keeps all three symbolic
    torch.onnx.export(model, (torch.randn(2, 3, 128, 160),), str(path), dynamo=True, external_data=False,
                      dynamic_shapes=({0: Dim("batch", min=1, max=64), 2: Dim.AUTO, 3: Dim.AUTO},),
                      input_names=["input"], output_names=["logits"], verbose=False, report=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dims = sess.get_inputs()[0].shape
    assert not isinstance(dims[2], int) and not isinstance(dims[3], int), dims
    for size in ((96, 128), (77, 109)):  # 77 x 109: not a multiple of 8, 16 or 32
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            want = model(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        assert got.shape == (1, 5, *size)
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max())), (size, np.abs(got - want).max())


@pytest.mark.parametrize("name", FAST)
def test_onnx_dynamic_size_matches_onnxruntime(name, tmp_path):
    _export_and_compare(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_onnx_dynamic_size_matches_onnxruntime_all_presets(name, tmp_path):
    _export_and_compare(name, tmp_path)
