"""INT8 static quantization (onnxruntime, QDQ, per-channel) of a model trained on the real digits set: the
INT8 graph is smaller, and its top-1 on the held-out digits split is reported next to FP32's."""
from __future__ import annotations

import pytest
import torch

import mobilevision
from mobilevision.data.datasets import DigitsSource
from mobilevision.deploy.export import export_onnx, read_metadata
from mobilevision.deploy.quantize import digits_arrays, folder_arrays, quantize_onnx

import test_deploy_fuse  # noqa: F401  (registers test_deploynet)
from mobilevision.models.registry import ModelConfig, WeightSource, register_model
from zoo_checks import PooledTestClassifier


class QuantNet(PooledTestClassifier):
    """A plain conv-BN-ReLU net (the shape INT8 suits): three stride-2 stages, average pool, linear."""

    def __init__(self, num_classes=10, in_chans=3, drop_rate=0.0, drop_path_rate=0.0, width=32):
        super().__init__()
        chs = [in_chans, width, 2 * width, 4 * width]
        self.stages = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Conv2d(a, b, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(b), torch.nn.ReLU())
            for a, b in zip(chs[:-1], chs[1:])
        )
        self.num_classes, self.num_features = num_classes, chs[-1]
        self.classifier = torch.nn.Linear(chs[-1], num_classes)
        self.feature_info = [dict(num_chs=c, reduction=2 ** (i + 1), module=f"stages.{i}") for i, c in enumerate(chs[1:])]

    def forward_stages(self, x):
        out = []
        for s in self.stages:
            x = s(x)
            out.append(x)
        return out


if "test_quantnet" not in mobilevision.list_models("test_quantnet"):
    register_model(ModelConfig("test_quantnet", "test", QuantNet, input_size=(3, 32, 32), crop_pct=1.0,
                               interpolation="bilinear", weights=WeightSource(note="test model")))


def train_on_digits(name: str, size: int = 32, epochs: int = 5, lr: float = 2e-3, **kwargs) -> torch.nn.Module:
    """A few epochs of AdamW on the digits train split (the split quantize_onnx evaluates against)."""
    model = mobilevision.create_model(name, num_classes=10, **kwargs)
    cfg = {**model.default_cfg, "input_size": (3, size, size)}
    x, y = digits_arrays(cfg, "train")
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(32):
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory):
    model = train_on_digits("test_quantnet")
    path = tmp_path_factory.mktemp("q") / "fp32.onnx"
    export_onnx(model, path, dynamic=True)
    return path


def test_int8_is_smaller_and_accuracy_is_reported(digits_onnx, tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    rep = quantize_onnx(digits_onnx, tmp_path / "int8.onnx", calibration="digits", num_calibration=128)
    assert not list((tmp_path / "cwd").iterdir())  # nothing left behind in the working directory
    print(f"\ndigits top-1 FP32 {rep.fp32_top1:.4f} -> INT8 {rep.int8_top1:.4f}; "
          f"latency {rep.fp32_ms:.3f} -> {rep.int8_ms:.3f} ms; size {rep.fp32_bytes} -> {rep.int8_bytes} bytes")
    assert rep.int8_bytes < 0.5 * rep.fp32_bytes
    assert rep.fp32_top1 is not None and rep.fp32_top1 > 0.9  # the model did learn the real digits
    assert rep.int8_top1 is not None and rep.fp32_top1 - rep.int8_top1 <= 0.02
    assert rep.eval_images == 360 and rep.calibration_images == 128
    assert read_metadata(tmp_path / "int8.onnx")["data_config"]["input_size"] == [3, 32, 32]
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_calibration_from_image_folder(digits_onnx, tmp_path):
    val = DigitsSource("val", image_size=16)
    for i in range(30):  # a small ImageFolder of real digit images, classes 0..9
        d = tmp_path / "imgs" / str(val.targets[i])
        d.mkdir(parents=True, exist_ok=True)
        val.images[i].save(d / f"{i}.png")
    xs, ys, classes = folder_arrays(tmp_path / "imgs", read_metadata(digits_onnx)["data_config"], (32, 32))
    assert xs.shape == (30, 3, 32, 32) and len(classes) == len(set(val.targets[:30]))
    rep = quantize_onnx(digits_onnx, tmp_path / "int8.onnx", calibration=str(tmp_path / "imgs"), num_calibration=16)
    assert rep.calibration_images == 16 and rep.eval_images == 30
    assert 0.0 <= rep.top1_agreement <= 1.0


def test_bad_inputs(tmp_path, digits_onnx):
    with pytest.raises(FileNotFoundError):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "o.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(ValueError, match="not a loadable ONNX"):
        quantize_onnx(tmp_path / "junk.onnx", tmp_path / "o.onnx")
    with pytest.raises(FileNotFoundError, match="calibration directory"):
        quantize_onnx(digits_onnx, tmp_path / "o.onnx", calibration=str(tmp_path / "nope"))


def test_graph_with_shared_constants_still_quantizes(tmp_path, monkeypatch):
    import onnxruntime.quantization as ortq

    calls = []
    real = ortq.quantize_static
    monkeypatch.setattr(ortq, "quantize_static", lambda *a, **k: calls.append(k["op_types_to_quantize"]) or real(*a, **k))
    # PoolFormer's exported graph feeds shared constants to several ops, which onnxruntime's quantizer refuses
    model = mobilevision.create_model("poolformer_s12", num_classes=10).eval()
    export_onnx(model, tmp_path / "g.onnx", input_size=(3, 32, 32), dynamic=True)
    rep = quantize_onnx(tmp_path / "g.onnx", tmp_path / "g8.onnx", calibration="digits", num_calibration=16)
    assert calls == [None, ["Conv", "MatMul", "Gemm"]]  # the full pass failed, the compute ops were quantized
    assert rep.int8_bytes > 0 and rep.eval_images == 360 and 0.0 <= rep.top1_agreement <= 1.0


def _fives_and_sevens(root, size: int, first: int) -> None:
    """Class folders `5/` and `7/` holding the val digits of those classes among the first `first`."""
    val = DigitsSource("val", image_size=size)
    for i, t in enumerate(val.targets[:first]):
        if t in (5, 7):
            d = root / str(t)
            d.mkdir(parents=True, exist_ok=True)
            val.images[i].save(d / f"{i}.png")


def test_class_folders_map_by_the_graph_labels(tmp_path):
    """Issue 12 bug 3: folders `5` and `7` were matched to outputs 0 and 1, so correct answers scored 0 %."""
    _fives_and_sevens(tmp_path / "imgs", size=16, first=40)
    cfg = mobilevision.create_model("test_quantnet").data_config
    _, ys, classes = folder_arrays(tmp_path / "imgs", cfg, labels=[str(i) for i in range(10)])
    assert classes == ["5", "7"] and set(ys.tolist()) == {5, 7}
    _, ys_sorted, _ = folder_arrays(tmp_path / "imgs", cfg)  # no labels: the training order of these folders
    assert set(ys_sorted.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="not among the model's labels"):
        folder_arrays(tmp_path / "imgs", cfg, labels=["cat", "dog"])


def test_quantize_folder_accuracy_uses_saved_labels(tmp_path):
    model = train_on_digits("test_quantnet", epochs=3)
    model.labels = [str(i) for i in range(10)]
    export_onnx(model, tmp_path / "fp32.onnx")
    _fives_and_sevens(tmp_path / "imgs", size=32, first=80)
    rep = quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", calibration=str(tmp_path / "imgs"),
                        num_calibration=8)
    assert rep.fp32_top1 is not None and rep.fp32_top1 > 0.8  # was 0.0 with folder order as the class index
