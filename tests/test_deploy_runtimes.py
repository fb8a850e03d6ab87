"""What the runtimes beyond ONNX share: the per-family parity check (used by test_deploy_openvino.py and
test_deploy_executorch.py), `mobilevision bench --backend all|LIST` (one table across runtimes and precisions),
the export command's --format / --int8 checks, and a one-line error naming the extra when a runtime's package is
missing."""
from __future__ import annotations

import json
import sys

import pytest

import mobilevision
from mobilevision.cli import main
from mobilevision.deploy.export import (FORMATS, export_model, other_size, read_metadata, sidecar_path,
                                       verify_exported)

from test_deploy_fuse import randomize

# one model of every family module (the smallest), for the runtimes' per-family sweeps
RUNTIME_FAMILY_MODELS = ["mobilenetv1_025", "mobilenetv2_035", "mobilenetv3_small_075", "efficientnet_b0", "moga_c",
                         "mobilevit_xxs", "mobileformer_26m", "poolformer_s12", "convnextv2_atto"]


def check_parity(fmt: str, name: str, tmp_path, atol: float = 1e-4, **model_kwargs) -> list[dict]:
    """Export `name` (random weights, non-trivial BN statistics) to `fmt` with dynamic H / W and compare its
    runtime with PyTorch FP32 at the default size and at `other_size` (random inputs and photos):
    max abs diff <= atol x max(1, |logit|). Returns the rows."""
    model = randomize(mobilevision.create_model(name, **model_kwargs)).eval()
    suffix = {"openvino": "xml", "executorch": "pte", "tflite": "tflite"}[fmt]
    res = export_model(model, tmp_path / f"{name}.{suffix}", fmt, dynamic=True)
    c, h, w = model.default_cfg["input_size"]
    assert res.dynamic_dims[:1] == ["batch"]
    assert "height" in res.dynamic_dims and "width" in res.dynamic_dims, f"{name}: {res.dynamic_dims}"
    sizes = [(h, w), other_size(h, w)]
    rows = verify_exported(model, res.path, sizes=sizes, batch=2, fuse_first=True)
    assert len(rows) == 2 * len(sizes)
    for r in rows:
        tol = atol * max(1.0, r["max_abs_logit"])
        assert r["max_abs_diff"] <= tol, f"{name} at {r['size']} on {r['inputs']}: max abs diff {r['max_abs_diff']:.2e}"
    meta = read_metadata(res.path)
    assert meta["data_config"]["input_size"] == [c, h, w] and meta["model"] == name
    assert meta["data_config"]["mean"] == list(model.default_cfg["mean"])
    return rows


def check_test_model_parity_and_sidecar(fmt: str, tmp_path) -> None:
    """`check_parity` of the test model at 32 and 64 px, and its sidecar `<file>.json` (ExecuTorch, LiteRT): FP32,
    batch, height and width dynamic."""
    rows = check_parity(fmt, "test_deploynet", tmp_path)
    assert {r["size"] for r in rows} == {(32, 32), (64, 64)}
    side = json.loads(sidecar_path(tmp_path / f"test_deploynet{FORMATS[fmt]}").read_text())
    assert side["precision"] == "fp32" and side["dynamic_dims"] == ["batch", "height", "width"]


def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


@pytest.mark.parametrize("argv, match", [
    (["export", "test_deploynet", "--format", "openvino", "--out", "m.onnx"], "give a .xml file"),
    (["export", "test_deploynet", "--format", "executorch", "--out", "m.xml"], "give a .pte file"),
    (["export", "test_deploynet", "--format", "tensorrt", "--out", "m.engine"], "invalid choice"),
    (["export", "test_deploynet", "--format", "tflite", "--out", "m.pte"], "give a .tflite file"),
    (["export", "test_deploynet", "--format", "coreml", "--int8", "--out", "m.mlpackage"], "not available"),
    (["export", "test_deploynet", "--format", "openvino", "--out", "m.xml", "--opset", "17"], "ONNX options"),
    (["export", "test_deploynet", "--int8", "--num-calibration", "0", "--out", "m.onnx"], "num-calibration"),
    (["bench", "test_deploynet", "--backend", "openvino,tensorrt"], "unknown backend tensorrt"),
    (["bench", "test_deploynet", "--backend", "onnxruntime,eager", "--size", "32", "--size", "40"],
     "one --input-size"),
    (["bench", "test_deploynet", "--backend", "onnxruntime,eager", "--precision", "int4"], "unknown precision"),
    (["bench", "test_deploynet", "--backend", "eager,onnxruntime", "--data", "digits"], "digits-trained"),
])
def test_bad_runtime_arguments_exit_2(capsys, argv, match):
    _one_line_error(capsys, argv, match)


def _hide(monkeypatch, package: str) -> None:
    """As if `package` (and so its extra) were not installed."""
    for mod in [m for m in list(sys.modules) if m == package or m.startswith(package + ".")] + [package]:
        monkeypatch.setitem(sys.modules, mod, None)


@pytest.mark.parametrize("package, argv", [
    ("openvino", ["export", "test_deploynet", "--format", "openvino", "--out", "{tmp}/m.xml"]),
    ("executorch", ["export", "test_deploynet", "--format", "executorch", "--out", "{tmp}/m.pte"]),
    ("litert", ["export", "test_deploynet", "--format", "tflite", "--out", "{tmp}/m.tflite"]),
    ("coreml", ["export", "test_deploynet", "--format", "coreml", "--out", "{tmp}/m.mlpackage"]),
])
def test_missing_runtime_package_names_its_extra(capsys, monkeypatch, tmp_path, package, argv):
    module = {"litert": "litert_torch", "coreml": "coremltools"}.get(package, package)
    _hide(monkeypatch, module)
    _one_line_error(capsys, [a.format(tmp=tmp_path) for a in argv], f"mobilevision[{package}]")


def test_missing_nncf_names_the_openvino_extra(capsys, monkeypatch, tmp_path):
    pytest.importorskip("openvino", reason="openvino (mobilevision[openvino]) not installed")
    export_model(randomize(mobilevision.create_model("test_deploynet")).eval(), tmp_path / "m.xml", "openvino")
    _hide(monkeypatch, "nncf")
    _one_line_error(capsys, ["quantize", str(tmp_path / "m.xml"), "--calibration", "digits", "--out",
                             str(tmp_path / "q.xml")], "mobilevision[openvino]")


def test_quantize_command_takes_an_openvino_ir(capsys, tmp_path):
    """`mobilevision quantize` dispatches on the suffix: an IR goes through NNCF and keeps its metadata."""
    pytest.importorskip("nncf", reason="nncf (mobilevision[openvino]) not installed")
    model = randomize(mobilevision.create_model("test_deploynet", num_classes=10)).eval()
    export_model(model, tmp_path / "m.xml", "openvino")
    assert main(["quantize", str(tmp_path / "m.xml"), "--calibration", "digits", "--num-calibration", "16",
                 "--out", str(tmp_path / "q.xml")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "top-1" in out and "latency" in out
    meta = read_metadata(tmp_path / "q.xml")
    assert meta["precision"] == "int8" and meta["data_config"]["input_size"] == [3, 32, 32]


def test_bench_runtime_table_with_top1(capsys, tmp_path):
    """One table across runtimes and precisions, with file sizes, latency and digits top-1, and a PNG."""
    pytest.importorskip("openvino", reason="openvino (mobilevision[openvino]) not installed")
    model = randomize(mobilevision.create_model("test_deploynet", num_classes=10)).eval()
    mobilevision.save_pretrained(model, tmp_path / "run")
    argv = ["bench", "test_deploynet", "--backend", "eager,onnxruntime,openvino", "--checkpoint", str(tmp_path / "run"),
            "--data", "digits", "--num-calibration", "16", "--runs", "3", "--warmup", "1", "--out", str(tmp_path / "b")]
    assert main(argv) == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "b" / "bench_runtimes.json").read_text())
    got = [(r["runtime"], r["precision"]) for r in rows]
    assert got == [("eager", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"),
                   ("openvino", "bf16"), ("openvino", "int8")]
    by = {(r["runtime"], r["precision"]): r for r in rows}
    # FP32 on every runtime is the same function: the same top-1 to the image
    assert len({by[k]["top1"] for k in [("eager", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")]}) == 1
    assert all(0.0 <= r["top1"] <= 1.0 and r["median_ms"] > 0 and r["file_bytes"] > 0 for r in rows)
    assert by[("onnxruntime", "int8")]["vs_fp32"] == pytest.approx(
        by[("onnxruntime", "int8")]["median_ms"] / by[("onnxruntime", "fp32")]["median_ms"])
    assert (tmp_path / "b" / "bench_runtimes.png").stat().st_size > 1000
    table = capsys.readouterr().out
    assert "openvino" in table and "x fp32" in table and "top-1 %" in table


@pytest.mark.parametrize("suffix, what", [(".pte", "ExecuTorch program"), (".tflite", "LiteRT model"),
                                          (".onnx", "ONNX")])
def test_a_file_the_runtime_refuses_is_a_one_line_error_naming_it(tmp_path, suffix, what):
    from mobilevision.deploy.runtime import load_exported

    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match=f"not a loadable {what}") as err:
        load_exported(path)
    assert "\n" not in str(err.value)
