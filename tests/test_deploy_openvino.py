"""OpenVINO IR export (`mobilevision[openvino]`): FP32 parity with PyTorch on the CPU plugin with the precision hint
set to f32 (the plugin computes in bf16 by default on AMX / AVX-512 BF16 CPUs), dynamic H / W, the metadata in the
IR, and NNCF INT8 that really runs int8 kernels."""
from __future__ import annotations

import numpy as np
import pytest

import mobilevision
from mobilevision.deploy.export import export_model, read_metadata, verify_exported

from test_deploy_fuse import randomize
from test_deploy_runtimes import RUNTIME_FAMILY_MODELS, check_parity

pytest.importorskip("openvino", reason="openvino not installed (pip install 'mobilevision[openvino]')")

FAST = ["test_deploynet", "mobilenetv3_small_075"]


@pytest.mark.parametrize("name", FAST)
def test_openvino_fp32_parity(name, tmp_path):
    check_parity("openvino", name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in RUNTIME_FAMILY_MODELS if n not in FAST])
def test_openvino_fp32_parity_every_family(name, tmp_path):
    check_parity("openvino", name, tmp_path)


def test_fp32_is_fp32_and_bf16_is_its_own_precision(tmp_path):
    """The f32 hint is what makes the FP32 figure FP32: the same IR compiled with the bf16 hint differs from
    PyTorch by orders of magnitude more."""
    from mobilevision.deploy.openvino_ir import compile_openvino

    model = randomize(mobilevision.create_model("test_deploynet")).eval()
    res = export_model(model, tmp_path / "m.xml", "openvino")
    assert compile_openvino(res.path, precision="fp32").get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    fp32 = verify_exported(model, res.path, sizes=[(32, 32)], photos=False, batch=4)[0]["max_abs_diff"]
    assert fp32 <= 1e-5
    core_caps = compile_openvino(res.path, precision="bf16").get_property("INFERENCE_PRECISION_HINT").to_string()
    if core_caps == "bf16":  # a CPU with bf16 support: the hint takes and the numbers move
        bf16 = verify_exported(model, res.path, sizes=[(32, 32)], photos=False, batch=4,
                               precision="bf16")[0]["max_abs_diff"]
        assert bf16 > 100 * fp32
    with pytest.raises(ValueError, match="precision"):
        compile_openvino(res.path, precision="int4")


def test_static_export_keeps_the_size_and_weights_stay_fp32(tmp_path):
    model = randomize(mobilevision.create_model("test_deploynet")).eval()
    res = export_model(model, tmp_path / "m.xml", "openvino", input_size=(48, 40))
    assert res.dynamic_dims == ["batch"] and res.input_size == (3, 48, 40)
    import openvino as ov

    ir = ov.Core().read_model(str(res.path))
    consts = [op for op in ir.get_ordered_ops() if op.get_type_name() == "Constant"]
    assert {op.get_output_element_type(0).get_type_name() for op in consts if op.get_output_size()} <= {"f32", "i64",
                                                                                                          "i32"}
    assert read_metadata(res.path)["data_config"]["input_size"] == [3, 48, 40]
    with pytest.raises(ValueError, match=".xml"):
        export_model(model, tmp_path / "m.onnx", "openvino")


def test_nncf_int8_runs_int8_kernels_and_agrees(tmp_path):
    """NNCF INT8 of a digits-class model: the compiled model runs convolutions in u8/i8, keeps the metadata,
    and agrees with FP32 on most digits images."""
    from mobilevision.deploy.quantize import calibration_data, quantize_file
    from mobilevision.deploy.runtime import OpenVINOClassifier

    model = randomize(mobilevision.create_model("test_deploynet", num_classes=10)).eval()
    fp32 = export_model(model, tmp_path / "m.xml", "openvino").path
    calib, x_eval, _ = calibration_data(model, "digits", 32)
    int8 = quantize_file(fp32, tmp_path / "m_int8.xml", calib)
    runner = OpenVINOClassifier(int8)
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str)
                  for op in runner.runner.compiled.get_runtime_model().get_ordered_ops()
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    assert precisions & {"u8", "i8"}, precisions
    assert runner.precision == "int8" and runner.data_config.input_size == (3, 32, 32)
    a = OpenVINOClassifier(fp32).run(x_eval[:200]).argmax(-1)
    b = runner.run(x_eval[:200]).argmax(-1)
    assert np.mean(a == b) >= 0.8


def test_conversions_send_no_usage_telemetry(monkeypatch, tmp_path):
    """OpenVINO's converter and NNCF queue usage statistics (each sent from a forked process) unless the user
    opted out; inside `no_usage_telemetry`, which wraps every mobilevision conversion, nothing is queued."""
    sender = pytest.importorskip("openvino_telemetry.utils.sender")
    from openvino_telemetry import Telemetry

    from mobilevision.deploy.openvino_ir import no_usage_telemetry

    queued = []
    monkeypatch.setattr(sender.TelemetrySender, "send", lambda self, backend, message: queued.append(message))
    export_model(randomize(mobilevision.create_model("test_deploynet")).eval(), tmp_path / "m.xml", "openvino")
    with no_usage_telemetry():
        Telemetry().send_event("mobilevision-test", "probe", "inside", force_send=True)
    assert queued == []
    Telemetry().send_event("mobilevision-test", "probe", "outside", force_send=True)  # queued to the recorder only
    assert len(queued) == 1
