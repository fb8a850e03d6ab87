"""ONNX export of the fused model: onnxruntime parity (<= 1e-4 on fp32 logits) at the default size and another
size, on random inputs and real photos; portable graphs (rank <= 5, standard ops, no random ops)."""
from __future__ import annotations

import pytest
from torch import nn

import mobilevision
from mobilevision.train.recipe import TASK_OF_FAMILY
from mobilevision.deploy.export import (export_onnx, graph_report, other_size, portability_problems, read_metadata,
                                        verify_onnx)
from mobilevision.deploy.profiling import count_on_meta
from mobilevision.models.registry import get_config

from test_deploy_fuse import randomize  # noqa: F401  (also registers test_deploynet)

# One model per family module (a cheap one of each), exported in the default run; the rest run under `slow`.
FAMILY_MODELS = ["mobilenetv3_small_075", "efficientnet_b0", "moga_c", "mobilevit_xxs", "mobileformer_26m",
                 "poolformer_s12", "convnextv2_atto"]


def check_export(name: str, tmp_path, atol: float = 1e-4) -> None:
    """Export `name` (random weights, non-trivial BN statistics) with dynamic shapes; compare onnxruntime with
    the PyTorch model at the default size and at `other_size`, on random inputs and on sample photos."""
    model = randomize(mobilevision.create_model(name)).eval()
    res = export_onnx(model, tmp_path / f"{name}.onnx", dynamic=True)
    assert res.exporter == "dynamo", f"{name}: fell back to the legacy exporter: {res.fallback_reason}"
    assert res.dynamic_dims[0] == "batch"
    assert res.graph["max_rank"] <= 5 and not portability_problems(res.graph)
    c, h, w = model.default_cfg["input_size"]
    sizes = [(h, w)]
    if "height" in res.dynamic_dims:
        sizes.append(other_size(h, w))
    rows = verify_onnx(model, res.path, sizes=sizes, batch=2, fuse_first=False)  # against the unfused model
    assert len(rows) == 2 * len(sizes)
    for r in rows:
        # absolute for logits within +-1, relative above: what `mobilevision export --atol` checks. Random-weight
        # EfficientNet-B5 (39 SE blocks, 384 px photos) lands at 1.06e-4 with logits of about 1.4.
        tol = atol * max(1.0, r["max_abs_logit"])
        assert r["max_abs_diff"] <= tol, f"{name} at {r['size']} on {r['inputs']}: max abs diff {r['max_abs_diff']:.2e}"
    assert len(sizes) == 2, f"{name}: H / W not dynamic ({res.dynamic_dims}); only the default size was checked"
    assert read_metadata(res.path)["data_config"]["input_size"] == [c, h, w]


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_export_family_representative(name, tmp_path):
    check_export(name, tmp_path)


def _models_under_100m() -> list[str]:
    out = []
    for name in mobilevision.list_models():
        if get_config(name).family == "test" or get_config(name).family in TASK_OF_FAMILY:  # task models: own export tests
            continue
        params, _ = count_on_meta(lambda: mobilevision.create_model(name), (3, 32, 32))
        if params < 100e6 and name not in FAMILY_MODELS:
            out.append(name)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", _models_under_100m())
def test_export_all_models_under_100m(name, tmp_path):
    check_export(name, tmp_path)


class _Rank6Unfold(nn.Module):
    """MobileViT-style unfold written with a rank-6 reshape: the graph CoreML / TensorRT reject."""

    def forward(self, x):
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4)  # (B, 2, 2, C, H/2, W/2)
        return x.reshape(b, 4 * c, h // 2, w // 2).mean((2, 3))


def test_rank_check_flags_rank6_reshape(tmp_path):
    with pytest.raises(RuntimeError, match="rank > 5"):
        export_onnx(_Rank6Unfold(), tmp_path / "r6.onnx", input_size=(3, 8, 8), fuse_first=False)
    import onnx

    rep = graph_report(onnx.load(str(tmp_path / "r6.onnx")))
    assert rep["max_rank"] == 6 and rep["high_rank"]


def test_exported_graph_has_no_random_ops_and_legacy_exporter_works(tmp_path):
    model = randomize(mobilevision.create_model("test_deploynet", drop_rate=0.5, drop_path_rate=0.5)).eval()
    for exporter in ("dynamo", "legacy"):
        res = export_onnx(model, tmp_path / f"{exporter}.onnx", dynamic=True, exporter=exporter)
        assert res.exporter == exporter and not res.graph["random_ops"]
        assert "BatchNormalization" in res.graph["ops"]  # the two BNs that must not fold are kept
        assert res.graph["ops"]["BatchNormalization"] == 2
        rows = verify_onnx(model, res.path, sizes=[(32, 32), (48, 40)])
        assert max(r["max_abs_diff"] for r in rows) <= 1e-4


def test_export_rejects_size_the_model_cannot_take(tmp_path):
    # a size of 0 is refused by the data config, one the network cannot run by the export's trial forward
    with pytest.raises(ValueError, match="positive entries"):
        export_onnx(mobilevision.create_model("test_deploynet"), tmp_path / "x.onnx", input_size=(3, 0, 0))
    with pytest.raises(ValueError, match="cannot take input size"):
        export_onnx(mobilevision.create_model("convnextv2_atto"), tmp_path / "x.onnx", input_size=(3, 2, 2))


def test_dynamic_export_from_a_size_with_1x1_maps_runs_at_every_size(tmp_path):
    """Exported at 32 px the last stage is 1x1, a size torch.export would bake into the graph: the dynamic
    graph must still run, and match PyTorch, at the default size and at a non-square size."""
    model = randomize(mobilevision.create_model("convnextv2_atto", num_classes=10)).eval()
    res = export_onnx(model, tmp_path / "small.onnx", input_size=(3, 32, 32), dynamic=True)
    assert res.dynamic_dims == ["batch", "height", "width"] and res.input_size == (3, 32, 32)
    rows = verify_onnx(model, res.path, sizes=[(32, 32), (224, 224), (96, 160)], photos=False, fuse_first=False)
    assert max(r["max_abs_diff"] for r in rows) <= 1e-4, rows


def test_mobilevit_export_serves_sizes_the_patches_do_not_divide(tmp_path):
    """MobileViT resizes maps the 2x2 patches do not divide; the exported graph must do so at any size."""
    model = randomize(mobilevision.create_model("mobilevit_xxs", num_classes=10)).eval()
    res = export_onnx(model, tmp_path / "mvit.onnx", input_size=(3, 48, 48), dynamic=True)
    assert "height" in res.dynamic_dims and not portability_problems(res.graph)
    rows = verify_onnx(model, res.path, sizes=[(48, 48), (256, 256), (100, 130)], photos=False, fuse_first=False)
    assert max(r["max_abs_diff"] for r in rows) <= 1e-4, rows
