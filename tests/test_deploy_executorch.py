"""ExecuTorch export with the XNNPACK delegate (`mobilevision[executorch]`): FP32 parity with PyTorch on
ExecuTorch's Python runtime at two sizes (dynamic H / W), the sidecar metadata, what stays outside the delegate,
and PT2E INT8 with XNNPACKQuantizer. Lowering costs ~10-40 s a model on a shared 2-core machine (plus ~30 s the
first time in a process), so only the test model is in the fast tier."""
from __future__ import annotations

import numpy as np
import pytest

import mobilevision
from mobilevision.deploy.export import export_model

from test_deploy_fuse import randomize
from test_deploy_runtimes import RUNTIME_FAMILY_MODELS, check_parity, check_test_model_parity_and_sidecar

pytest.importorskip("executorch", reason="executorch not installed (pip install 'mobilevision[executorch]')")


def test_executorch_fp32_parity_and_sidecar(tmp_path):
    check_test_model_parity_and_sidecar("executorch", tmp_path)


@pytest.mark.slow
@pytest.mark.sweep  # 1-15 min per model to lower: outside CI's 30-minute budget (.ci/run says so)
@pytest.mark.parametrize("name", RUNTIME_FAMILY_MODELS)
def test_executorch_fp32_parity_every_family(name, tmp_path):
    check_parity("executorch", name, tmp_path)


@pytest.mark.slow
def test_static_program_runs_any_batch_and_delegates_the_convolutions(tmp_path):
    """Without --dynamic H / W are fixed; the batch stays dynamic up to MAX_BATCH and the runner chunks above it."""
    from mobilevision.deploy.executorch_pte import MAX_BATCH
    from mobilevision.deploy.runtime import ExecuTorchClassifier

    model = randomize(mobilevision.create_model("test_deploynet")).eval()
    res = export_model(model, tmp_path / "m.pte", "executorch", input_size=(40, 48))
    assert res.dynamic_dims == ["batch"] and res.graph["delegate_calls"] >= 1
    assert not any("convolution" in op for op in res.graph["ops_outside_delegate"])
    runner = ExecuTorchClassifier(res.path)
    assert runner.data_config.input_size == (3, 40, 48) and runner.max_batch <= MAX_BATCH
    import torch

    x = torch.randn(MAX_BATCH + 3, 3, 40, 48)
    from mobilevision.deploy.fusion import fuse

    with torch.no_grad():
        ref = fuse(model)(x).numpy()
    assert np.abs(runner.run(x.numpy()) - ref).max() <= 1e-4


@pytest.mark.slow
def test_pt2e_int8_program_runs_the_quantized_graph(tmp_path):
    """The INT8 program computes what the PT2E-quantized PyTorch graph computes (XNNPACK's int8 kernels vs
    PyTorch's reference quantize / dequantize), with the quantize ops inside the delegate."""
    import torch

    from mobilevision.deploy.executorch_pte import quantize_pt2e
    from mobilevision.deploy.fusion import fuse
    from mobilevision.deploy.quantize import calibration_data
    from mobilevision.deploy.runtime import ExecuTorchClassifier

    model = randomize(mobilevision.create_model("test_deploynet", num_classes=10)).eval()
    calib, x_eval, _ = calibration_data(model, "digits", 32)
    res = export_model(model, tmp_path / "m_int8.pte", "executorch", calibration=calib)
    assert res.graph["delegate_calls"] >= 1
    assert not any("quantize" in op for op in res.graph["ops_outside_delegate"]), res.graph
    int8 = ExecuTorchClassifier(res.path)
    assert int8.precision == "int8" and int8.data_config.input_size == (3, 32, 32)
    x = x_eval[:64]
    with torch.no_grad():
        ref = quantize_pt2e(fuse(model), calib)(torch.from_numpy(x)).numpy()
    got = int8.run(x)
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(got - ref).max() <= 0.05 * scale, (np.abs(got - ref).max(), scale)
    assert np.mean(got.argmax(-1) == ref.argmax(-1)) >= 0.9
