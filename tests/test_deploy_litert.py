"""LiteRT / TFLite export with litert-torch (`mobilevision[litert]`): FP32 parity with PyTorch on the ai-edge-litert
interpreter at two sizes (dynamic H / W), the sidecar metadata, and INT8 with litert-torch's PT2E quantizer. A
conversion costs ~5-30 s a model on a shared 2-core machine (plus ~10 s to import the converter), so only the test
model is in the fast tier."""
from __future__ import annotations

import numpy as np
import pytest

import mobilevision
from mobilevision.deploy.export import export_model

from test_deploy_fuse import randomize
from test_deploy_runtimes import RUNTIME_FAMILY_MODELS, check_parity, check_test_model_parity_and_sidecar

pytest.importorskip("litert_torch", reason="litert-torch not installed (pip install 'mobilevision[litert]')")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed (pip install 'mobilevision[litert]')")


def test_litert_fp32_parity_and_sidecar(tmp_path):
    check_test_model_parity_and_sidecar("tflite", tmp_path)


@pytest.mark.slow
@pytest.mark.sweep  # 0.5-5 min per model to convert on a loaded 2-core machine: outside CI's 30-minute budget
@pytest.mark.parametrize("name", RUNTIME_FAMILY_MODELS)
def test_litert_fp32_parity_every_family(name, tmp_path):
    check_parity("tflite", name, tmp_path)


@pytest.mark.slow
def test_litert_int8_runs_the_quantized_graph(tmp_path):
    """The INT8 model is full-integer (int8 input and output, which the runner (de)quantizes), smaller than the
    FP32 one, and computes what the PT2E-quantized PyTorch graph computes, at any batch."""
    import torch

    from mobilevision.deploy.fusion import fuse
    from mobilevision.deploy.litert_tflite import quantize_pt2e
    from mobilevision.deploy.quantize import calibration_data
    from mobilevision.deploy.runtime import LiteRTClassifier

    model = randomize(mobilevision.create_model("test_deploynet", num_classes=10)).eval()
    model.labels = [f"digit {i}" for i in range(10)]
    calib, x_eval, _ = calibration_data(model, "digits", 32)
    fp32 = export_model(model, tmp_path / "m.tflite", "tflite")
    res = export_model(model, tmp_path / "m_int8.tflite", "tflite", calibration=calib)
    int8 = LiteRTClassifier(res.path)
    assert int8.precision == "int8" and int8.data_config.input_size == (3, 32, 32)
    # the metadata is the model's, not the quantized graph's (which drops its attributes)
    assert (int8.model_name, int8.num_classes, int8.labels) == ("test_deploynet", 10, model.labels)
    assert int8.runner.input["dtype"] == np.int8 and int8.runner.output["dtype"] == np.int8
    assert res.path.stat().st_size < fp32.path.stat().st_size
    x = x_eval[:70]  # above MAX_BATCH (64): two chunks
    with torch.no_grad():
        q = quantize_pt2e(fuse(model), calib)[0]
        ref = np.concatenate([q(torch.from_numpy(x[i:i + 35])).numpy() for i in (0, 35)])
    got = int8.run(x)
    scale = max(1.0, float(np.abs(ref).max()))
    assert got.shape == ref.shape and np.abs(got - ref).max() <= 0.05 * scale, (np.abs(got - ref).max(), scale)


@pytest.mark.slow
def test_litert_int8_mobilenetv3_converts_and_runs_any_batch(tmp_path):
    """MobileNetV3's post-pool head (a 1x1 conv on the pooled map) converts with a dynamic batch: litert-torch
    could not lower the reshape by the batch that followed it when the head ran as a conv."""
    import torch

    from mobilevision.deploy.fusion import fuse
    from mobilevision.deploy.litert_tflite import quantize_pt2e
    from mobilevision.deploy.quantize import calibration_data
    from mobilevision.deploy.runtime import LiteRTClassifier
    from mobilevision.data.config import resolve_data_config

    model = randomize(mobilevision.create_model("mobilenetv3_small_075", num_classes=10)).eval()
    calib, x_eval, _ = calibration_data(resolve_data_config(model, input_size=(3, 64, 64)), "digits", 8)
    res = export_model(model, tmp_path / "m_int8.tflite", "tflite", calibration=calib, input_size=(3, 64, 64))
    int8 = LiteRTClassifier(res.path)
    x = x_eval[:3]
    with torch.no_grad():
        ref = quantize_pt2e(fuse(model), calib)[0](torch.from_numpy(x)).numpy()
    got = int8.run(x)
    scale = max(1.0, float(np.abs(ref).max()))
    # full-integer TFLite requantizes every hard-swish and SE output; the PT2E graph runs those in float
    assert got.shape == (3, 10) and np.abs(got - ref).max() <= 0.15 * scale, (np.abs(got - ref).max(), scale)


@pytest.mark.slow
@pytest.mark.sweep  # two conversions (~1-2 min): the INT8 path is covered in CI by the test above
def test_export_cli_tflite_with_int8_report(capsys, tmp_path):
    from mobilevision.cli import main

    argv = ["export", "test_deploynet", "--num-classes", "10", "--format", "tflite", "--int8",
            "--num-calibration", "16", "--out", str(tmp_path / "m.tflite")]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "LiteRT" in out and "tflite vs PyTorch" in out and "INT8 ->" in out
    assert (tmp_path / "m_int8.tflite").is_file() and (tmp_path / "m_int8.tflite.json").is_file()
