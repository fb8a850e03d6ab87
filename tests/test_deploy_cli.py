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


@pytest.mark.parametrize("name, parts", [("ssdlite_mobilevit_xxs", ["backbone", "extra", "head"]),
                                         ("deeplabv3_mobilenetv3_large_100", ["backbone", "head", "aux_head"])])
def test_profile_task_models_by_part(name, parts, capsys):
    assert main(["profile", name, "--size", "160", "160", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [r["module"] for r in info["stages"]] == parts
    assert sum(r["params"] for r in info["stages"]) == info["params"]
    assert abs(info["stages"][-1]["cum_macs"] - info["macs"]) <= 0.002 * info["macs"]  # every MAC is in a part
    assert all(r["macs"] > 0 for r in info["stages"] if r["module"] != "aux_head")  # aux: train mode only


def test_bench_runs_detectors_and_segmenters_in_their_export_form(tmp_path, capsys):
    assert main(["bench", "ssdlite_mobilevit_xxs", "lraspp_mobilenetv3_large_100", "--size", "128", "--runs", "2",
                 "--warmup", "1", "--backend", "onnxruntime", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bench_onnxruntime.json").read_text())
    assert [r["model"] for r in rows] == ["ssdlite_mobilevit_xxs", "lraspp_mobilenetv3_large_100"]
    assert all(r["median_ms"] > 0 for r in rows)


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


# ---------------------------------------------------------------- issue 12: what a new user hit
@pytest.mark.parametrize("extra", [[], ["--size", "48", "48"], ["--checkpoint", "TRAINED"]])
def test_export_without_dynamic_has_a_dynamic_batch(capsys, tmp_path, checkpoint, extra):
    """Bug 1: without --dynamic the graph was fixed at batch 1 and its own check fed it 5 images."""
    import onnx

    extra = [str(checkpoint / "run") if e == "TRAINED" else e for e in extra]
    out = tmp_path / "m.onnx"
    assert main(["export", "test_deploynet", "--output", str(out), *extra]) == 0, capsys.readouterr().err
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value")  # batch: symbolic
    assert all(d.HasField("dim_value") for d in dims[1:])  # C, H, W fixed without --dynamic
    assert [d.dim_value for d in dims[2:]] == ([48, 48] if "48" in extra else [32, 32])
    assert capsys.readouterr().out.count("max abs diff") == 2


def test_bare_weights_need_num_classes(capsys, tmp_path, checkpoint):
    """Bug 2: a weights file without config.json silently got a random 1000-class head."""
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "w.safetensors").write_bytes((checkpoint / "run" / "model.safetensors").read_bytes())
    img = str(checkpoint / "chelsea.jpg")
    _one_line_error(capsys, ["predict", "test_deploynet", img, "--checkpoint", str(bare / "w.safetensors")],
                    "--num-classes 6")
    assert main(["predict", "test_deploynet", img, "--checkpoint", str(bare / "w.safetensors"),
                 "--num-classes", "6", "--json"]) == 0
    bare_top = json.loads(capsys.readouterr().out)[0]["top"]
    assert main(["predict", "test_deploynet", img, "--checkpoint", str(checkpoint / "run"), "--json"]) == 0
    saved_top = json.loads(capsys.readouterr().out)[0]["top"]
    # the trained head: the same probabilities (labels are only in config.json)
    assert [round(t["prob"], 5) for t in bare_top] == [round(t["prob"], 5) for t in saved_top]


@pytest.fixture(scope="module")
def graphs(checkpoint, tmp_path_factory):
    """The checkpoint exported to FP32 ONNX and quantized to INT8."""
    from mobilevision.deploy import export_onnx, quantize_onnx

    d = tmp_path_factory.mktemp("graphs")
    model = mobilevision.create_model("test_deploynet", checkpoint_path=checkpoint / "run")
    export_onnx(model, d / "m.onnx")
    quantize_onnx(d / "m.onnx", d / "m.int8.onnx", calibration="digits", num_calibration=8)
    return d


def test_predict_runs_onnx_and_int8_graphs(capsys, checkpoint, graphs):
    """Bug 4: predict refused .onnx / .int8.onnx checkpoints ("would run code")."""
    img = str(checkpoint / "chelsea.jpg")
    assert main(["predict", "test_deploynet", img, "--checkpoint", str(checkpoint / "run"), "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)[0]["top"]
    for name in ("m.onnx", "m.int8.onnx"):
        assert main(["predict", img, "--checkpoint", str(graphs / name), "--json"]) == 0, capsys.readouterr().err
        top = json.loads(capsys.readouterr().out)[0]["top"]
        assert top[0]["label"] == ref[0]["label"]  # labels come from the graph's metadata
        if name == "m.onnx":
            assert abs(top[0]["prob"] - ref[0]["prob"]) < 1e-4
    _one_line_error(capsys, ["predict", "mobilenetv1_025", img, "--checkpoint", str(graphs / "m.onnx")],
                    "exported from model 'test_deploynet'")


def test_onnx_runner_matches_the_model(checkpoint, graphs):
    import torch

    from mobilevision.deploy import OnnxClassifier

    model = mobilevision.create_model("test_deploynet", checkpoint_path=checkpoint / "run").eval()
    runner = OnnxClassifier(graphs / "m.onnx")
    assert runner.data_config == model.data_config and runner.labels == model.labels and runner.num_classes == 6
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(runner(x), model(x), atol=1e-4, rtol=1e-4)


def test_eval_runs_onnx_graphs(tmp_path):
    """Bug 4 for eval: the same top-1 from the PyTorch checkpoint and its exported graph."""
    from mobilevision.deploy import export_onnx

    model = randomize(mobilevision.create_model("test_deploynet", num_classes=10)).eval()
    mobilevision.save_pretrained(model, tmp_path / "run", labels=[str(i) for i in range(10)])
    export_onnx(mobilevision.create_model("test_deploynet", checkpoint_path=tmp_path / "run"), tmp_path / "m.onnx")
    results = []
    for argv in (["test_deploynet", "--checkpoint", str(tmp_path / "run")], ["--checkpoint", str(tmp_path / "m.onnx")]):
        out = tmp_path / f"eval{len(results)}.json"
        assert main(["eval", *argv, "--data", "digits", "--output", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert results[0]["images"] == results[1]["images"] == 360
    assert abs(results[0]["top1"] - results[1]["top1"]) <= 100 / 360 + 1e-9  # at most one borderline image
    assert results[1]["model"] == "test_deploynet"


def test_predict_folder_skips_unreadable_and_writes_json_csv(capfd, tmp_path, checkpoint):
    """predict takes a folder, reports an unreadable image in one line and goes on; --json and CSV output."""
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a.jpg").write_bytes((checkpoint / "chelsea.jpg").read_bytes())
    (d / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["predict", "test_deploynet", str(d), "--checkpoint", str(checkpoint / "run"), "--json",
                 "--output", str(tmp_path / "p.csv"), "--topk", "3"]) == 0
    captured = capfd.readouterr()
    rows = json.loads(captured.out)
    assert [r["image"].endswith(n) for r, n in zip(rows, ("a.jpg", "b.jpg"))] == [True, True]
    assert len(rows[0]["top"]) == 3 and "cannot read image" in rows[1]["error"]
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mobilevision: warning: cannot read image") and "b.jpg" in err[0]
    csv_lines = (tmp_path / "p.csv").read_text().splitlines()
    assert csv_lines[0] == "image,label_0,label_1,label_2,prob_0,prob_1,prob_2,error" and len(csv_lines) == 3


def test_quantize_prints_no_onnxruntime_warnings(capfd, tmp_path, graphs):
    """quantize printed ~24 lines of onnxruntime advice (its pre-processing suggestion and friends)."""
    assert main(["quantize", str(graphs / "m.onnx"), "--calibration", "digits", "--output",
                 str(tmp_path / "q.onnx"), "--num-calibration", "8"]) == 0
    captured = capfd.readouterr()
    assert "latency" in captured.out and captured.err.strip() == "", captured.err


def test_bench_prints_no_cuda_line(tmp_path):
    """A CPU-only machine with a CUDA toolkit directory printed "No CUDA runtime is found" from torch."""
    import subprocess
    import sys

    code = ("from mobilevision.cli import main; import sys; sys.exit(main(['bench', 'test_deploynet', '--runs', '1', "
            f"'--warmup', '0', '--output', {str(tmp_path / 'b')!r}]))")
    prelude = "import sys; sys.path.insert(0, 'tests'); import test_deploy_fuse; "
    out = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                         cwd=__import__("pathlib").Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr
