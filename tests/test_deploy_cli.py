"""`mobilevision profile | bench | export | quantize | predict`: happy paths on the test model and one real model,
and a one-line error with exit code 2 on every kind of bad input."""
from __future__ import annotations

import json

import pytest

import mobilevision
from mobilevision.cli import main
from mobilevision.deploy.inference import sample_photos

from test_deploy_fuse import randomize


def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved test model with labels, plus a real photo and a broken image file."""
    d = tmp_path_factory.mktemp("cli")
    model = randomize(mobilevision.create_model("test_deploynet", num_classes=6)).eval()
    mobilevision.save_pretrained(model, d / "run", labels=["cat", "dog", "coffee", "person", "rocket", "cup"])
    sample_photos(["chelsea"])["chelsea"].save(d / "chelsea.jpg")
    (d / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return d


@pytest.mark.parametrize("argv, match", [
    (["profile", "mobilenetv3_smal_100"], "unknown model"),
    (["profile", "test_deploynet", "--size", "0", "0"], "size"),
    (["bench", "nope_model"], "unknown model"),
    (["bench", "test_deploynet", "--size", "0"], "size"),
    (["bench", "test_deploynet", "--batch", "a,b"], "batch"),
    (["export", "nope_model", "--out", "x.onnx"], "unknown model"),
    (["quantize", "missing.onnx", "--calibration", "digits", "--out", "x.onnx"], "not found"),
])
def test_bad_input_exits_2(capsys, argv, match):
    _one_line_error(capsys, argv, match)


def test_export_bad_checkpoint_and_size(capsys, tmp_path, checkpoint):
    _one_line_error(capsys, ["export", "test_deploynet", "--checkpoint", str(tmp_path / "none.safetensors"),
                             "--out", str(tmp_path / "m.onnx")], "checkpoint not found")
    _one_line_error(capsys, ["export", "test_deploynet", "--size", "0", "0", "--out", str(tmp_path / "m.onnx")],
                    "size")
    _one_line_error(capsys, ["export", "mobilenetv1_025", "--checkpoint", str(checkpoint / "run"),
                             "--out", str(tmp_path / "m.onnx")], "saved from model")


def test_predict_bad_inputs(capsys, tmp_path, checkpoint):
    ck = str(checkpoint / "run")
    _one_line_error(capsys, ["predict", "test_deploynet", str(checkpoint / "broken.jpg"), "--checkpoint", ck],
                    "cannot read image")
    _one_line_error(capsys, ["predict", "test_deploynet", str(tmp_path / "absent.png"), "--checkpoint", ck],
                    "image not found")
    _one_line_error(capsys, ["predict", "test_deploynet", str(checkpoint / "chelsea.jpg"), "--checkpoint",
                             str(tmp_path / "nothing")], "checkpoint not found")
    _one_line_error(capsys, ["predict", "test_deploynet", str(checkpoint / "chelsea.jpg")], "--checkpoint")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    _one_line_error(capsys, ["predict", "test_deploynet", str(checkpoint / "chelsea.jpg"), "--checkpoint", ck,
                             "--labels", str(tmp_path / "labels.txt")], "2 labels given but the model has 6")


def test_predict_top5_with_saved_labels(capsys, checkpoint):
    assert main(["predict", "test_deploynet", str(checkpoint / "chelsea.jpg"), "--checkpoint",
                 str(checkpoint / "run")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith("chelsea.jpg") and len(lines) == 6
    probs = [float(line.split("%")[0]) for line in lines[1:]]
    names = [line.split("%")[1].strip() for line in lines[1:]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.01
    assert set(names) <= {"cat", "dog", "coffee", "person", "rocket", "cup"}


def test_profile_real_model(capsys):
    assert main(["profile", "mobilenetv3_small_100", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert abs(info["params"] / 1e6 - 2.543) < 0.01 and abs(info["macs"] / 1e9 - 0.0565) < 0.002
    assert len(info["stages"]) == 5 and info["activation_bytes"] > 0
    assert sum(s["macs"] for s in info["stages"]) <= info["macs"]


def test_export_quantize_bench_chain(capsys, tmp_path, checkpoint):
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "test_deploynet", "--checkpoint", str(checkpoint / "run"), "--out", str(onnx_path),
                 "--dynamic"]) == 0
    out = capsys.readouterr().out
    assert "dynamo exporter" in out and out.count("max abs diff") == 4
    assert main(["quantize", str(onnx_path), "--calibration", "digits", "--out", str(tmp_path / "q.onnx"),
                 "--num-calibration", "16"]) == 0
    assert "latency" in capsys.readouterr().out
    assert main(["bench", "test_deploynet", "--batch", "1,2", "--size", "32,48", "--runs", "3", "--warmup", "1",
                 "--out", str(tmp_path / "bench")]) == 0
    rows = json.loads((tmp_path / "bench" / "bench_eager.json").read_text())
    assert len(rows) == 4 and all(r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] for r in rows)
    assert (tmp_path / "bench" / "bench_eager.png").stat().st_size > 1000
    assert (tmp_path / "bench" / "bench_eager.csv").read_text().startswith("model,")


def test_missing_optional_package_is_one_line(capsys, monkeypatch, tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    for mod in ("onnxruntime", "onnxruntime.quantization"):  # as if the deploy extra were absent
        monkeypatch.setitem(__import__("sys").modules, mod, None)
    _one_line_error(capsys, ["quantize", str(tmp_path / "m.onnx"), "--calibration", "digits", "--out",
                             str(tmp_path / "q.onnx")], "mobilevision[deploy]")
