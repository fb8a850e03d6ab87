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
    model.labels = [f"digit {i}" for i in range(10)]
    calib, x_eval, _ = calibration_data(model, "digits", 32)
    res = export_model(model, tmp_path / "m_int8.pte", "executorch", calibration=calib)
    assert res.graph["delegate_calls"] >= 1
    assert not any("quantize" in op for op in res.graph["ops_outside_delegate"]), res.graph
    int8 = ExecuTorchClassifier(res.path)
    assert int8.precision == "int8" and int8.data_config.input_size == (3, 32, 32)
    # the metadata is the model's, not the quantized graph's (which drops its attributes)
    assert (int8.model_name, int8.num_classes, int8.labels) == ("test_deploynet", 10, model.labels)
    x = x_eval[:64]
    with torch.no_grad():
        ref = quantize_pt2e(fuse(model), calib)(torch.from_numpy(x)).numpy()
    got = int8.run(x)
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(got - ref).max() <= 0.05 * scale, (np.abs(got - ref).max(), scale)
    assert np.mean(got.argmax(-1) == ref.argmax(-1)) >= 0.9


@pytest.mark.parametrize("token_id", [0, -1])
def test_token_dyrelu_keeps_the_batch_dynamic_through_edge_lowering(token_id):
    """ExecuTorch's edge lowering of `split` fixed the batch of a Mobile-Former program at the traced 2 (its
    ExecuTorch program then failed at batch 1 and refused batch 3); the DY-ReLU slices instead."""
    import torch
    from executorch.exir import to_edge
    from torch.export import Dim

    from mobilevision.layers.dynamic_relu import TokenDynamicReLU

    layer = TokenDynamicReLU(8, 16, token_id=token_id).eval()
    x, tokens, mix = torch.randn(2, 8, 5, 5), torch.randn(2, 3, 16), torch.randn(2, 3, 5, 5).softmax(1)
    batch = Dim("batch", min=1, max=16)
    program = torch.export.export(layer, (x, tokens, mix), dynamic_shapes=({0: batch}, {0: batch}, {0: batch}))
    (bound,) = to_edge(program).exported_program().range_constraints.values()
    assert bound.upper == 16, bound


@pytest.mark.slow
def test_mobileformer_program_runs_other_batches_than_the_traced_one(tmp_path):
    import torch

    from mobilevision.deploy.fusion import fuse
    from mobilevision.deploy.runtime import ExecuTorchClassifier

    model = randomize(mobilevision.create_model("mobileformer_26m", num_classes=10)).eval()
    res = export_model(model, tmp_path / "mf.pte", "executorch", input_size=(96, 96))
    runner = ExecuTorchClassifier(res.path)
    assert runner.max_batch > 2  # was fixed at the traced 2
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        ref = fuse(model)(x).numpy()
    for b in (1, 3):  # traced at 2
        assert np.abs(runner.run(x[:b].numpy()) - ref[:b]).max() <= 1e-4 * max(1.0, np.abs(ref).max())
