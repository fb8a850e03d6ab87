"""Core ML export with coremltools (`mobilevision[coreml]`). Prediction needs macOS, so nothing here runs a package:
the tests check what Linux can: the conversion of the torch.export program, the op set and ranks (none above 5),
the metadata, that the norm ops computing over many elements (GRN's L2 norm, LayerNorm) stay fp32 inside the fp16
program, and the fp16 ranges of the activations measured in PyTorch. Conversion costs ~5-25 s a model here, so
only the test model is in the fast tier."""
from __future__ import annotations

import pytest

import mobilevision
from mobilevision.deploy.export import export_model, read_metadata

from test_deploy_fuse import randomize
from test_deploy_runtimes import RUNTIME_FAMILY_MODELS

pytest.importorskip("coremltools", reason="coremltools not installed (pip install 'mobilevision[coreml]')")


def test_coreml_conversion_op_set_and_metadata(tmp_path):
    model = randomize(mobilevision.create_model("test_deploynet")).eval()
    res = export_model(model, tmp_path / "m.mlpackage", "coreml")
    g = res.graph
    assert res.path.is_dir() and g["max_rank"] <= 4 and not g["high_rank"]
    assert g["ops"]["conv"] >= 3 and "linear" in g["ops"] and g["fp16_ops"] > 0  # fp16 compute by default
    assert g["fp16"]["nonfinite_modules"] == [] and g["fp16"]["top1_agree"] == 1.0
    meta = read_metadata(res.path)
    assert meta["model"] == "test_deploynet" and meta["data_config"]["input_size"] == [3, 32, 32]
    assert meta["precision"] == "fp16"


@pytest.mark.parametrize("kwargs, match", [({"dynamic": True}, "static"), ({"calibration": object()}, "INT8")])
def test_coreml_refuses_what_it_cannot_check(tmp_path, kwargs, match):
    model = mobilevision.create_model("test_deploynet").eval()
    with pytest.raises(ValueError, match=match):
        export_model(model, tmp_path / "m.mlpackage", "coreml", **kwargs)


@pytest.mark.slow
def test_grn_and_layernorm_stay_fp32_in_the_fp16_program(tmp_path):
    """ConvNeXt V2: every reduce_l2_norm (GRN) and layer_norm takes an fp32 input in the converted program; a plain
    fp16 program (nothing kept in fp32) is refused as not portable."""
    from mobilevision.deploy.coreml_package import export_coreml

    model = randomize(mobilevision.create_model("convnextv2_atto")).eval()
    res = export_model(model, tmp_path / "m.mlpackage", "coreml", input_size=(128, 128))
    g = res.graph
    assert g["ops"]["reduce_l2_norm"] == g["fp32_ops"]["reduce_l2_norm"] > 0
    assert g["ops"]["layer_norm"] == g["fp32_ops"]["layer_norm"] > 0
    assert g["fp16_norm_ops"] == [] and g["fp16"]["over_fp16"] == [] and g["fp16"]["norm_sum_squares"] > 0
    with pytest.raises(RuntimeError, match="norm ops computing in fp16"):
        export_coreml(model, tmp_path / "plain.mlpackage", input_size=(128, 128), fp32_ops=())


@pytest.mark.slow
@pytest.mark.sweep  # 10 s - 4.5 min per model on a loaded 2-core machine: outside CI's 30-minute budget
@pytest.mark.parametrize("name", RUNTIME_FAMILY_MODELS)
def test_coreml_conversion_every_family(name, tmp_path):
    """One model of every family converts at its default size with ranks <= 5, finite fp16 ranges, and a half-
    precision PyTorch pass agreeing with FP32 on the top-1 of most inputs."""
    model = randomize(mobilevision.create_model(name)).eval()
    res = export_model(model, tmp_path / f"{name}.mlpackage", "coreml")
    g = res.graph
    assert g["max_rank"] <= 5 and g["fp16_norm_ops"] == []
    assert g["fp16"]["over_fp16"] == [] and g["fp16"]["nonfinite_modules"] == [], g["fp16"]
    assert read_metadata(res.path)["model"] == name
