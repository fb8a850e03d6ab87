"""explain.collapse: the cosine-distance statistic against a direct NumPy computation, and the taps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mobilevision
from mobilevision.data.config import resolve_data_config
from mobilevision.deploy.inference import sample_photos
from mobilevision.explain import channel_cosine_distance, collapse_taps, feature_collapse, plot_collapse
from mobilevision.explain.collapse import sample_indices
from mobilevision.explain.inputs import image_batch

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32))


def _numpy_distance(x: np.ndarray) -> float:
    """(1/C^2) sum_i sum_j (1 - cos(X_i, X_j)) / 2 for one image x (C, H, W), pair by pair."""
    c = x.shape[0]
    flat = x.reshape(c, -1).astype(np.float64)
    total = 0.0
    for i in range(c):
        for j in range(c):
            cos = flat[i] @ flat[j] / (np.linalg.norm(flat[i]) * np.linalg.norm(flat[j]))
            total += (1.0 - cos) / 2.0
    return total / c ** 2


def _photos(model, size=64, names=("chelsea", "coffee", "astronaut")) -> torch.Tensor:
    cfg = resolve_data_config(model, input_size=(size, size))
    return image_batch(list(sample_photos(names).values()), cfg)


def test_statistic_equals_direct_numpy_on_photo_features():
    model = mobilevision.create_model("convnextv2_atto", num_classes=0, **TINY).eval()
    with torch.no_grad():
        feats = model.stem(_photos(model))  # (3, 8, 16, 16): real photos' stem maps
    got = channel_cosine_distance(feats).numpy()
    want = [_numpy_distance(f) for f in feats.numpy()]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # channels-last input gives the same numbers
    np.testing.assert_allclose(channel_cosine_distance(feats.permute(0, 2, 3, 1), channels_last=True).numpy(), got,
                               rtol=1e-6)


def test_statistic_known_values():
    v = torch.tensor([1.0, 2.0, 0.0, 3.0]).reshape(1, 1, 2, 2)
    copies = v.repeat(1, 5, 1, 1)  # five identical channels: fully collapsed
    assert float(channel_cosine_distance(copies)) == pytest.approx(0.0, abs=1e-7)
    onehot = torch.eye(4).reshape(1, 4, 2, 2)  # disjoint supports: orthogonal, cos 1 only on the diagonal
    assert float(channel_cosine_distance(onehot)) == pytest.approx((1 - 1 / 4) / 2)
    opposite = torch.cat([v, -v], dim=1)  # cos -1 off the diagonal: (0 + 1 + 1 + 0) / 4
    assert float(channel_cosine_distance(opposite)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="features must be"):
        channel_cosine_distance(torch.zeros(4, 4))


def test_block_taps_match_each_blocks_output():
    model = mobilevision.create_model("convnextv2_atto", num_classes=0, **TINY).eval()
    x = _photos(model)
    taps = collapse_taps(model, "output")
    assert [t.name for t in taps] == ["stages.0.blocks.0", "stages.1.blocks.0", "stages.2.blocks.0",
                                      "stages.2.blocks.1", "stages.3.blocks.0"]
    res = feature_collapse(model, [x[:2], x[2:]])
    assert res.values.shape == (3, 5)
    want = []
    with torch.no_grad():
        h = model.stem(x)
        for stage in model.stages:
            h = stage.downsample(h)
            for block in stage.blocks:
                h = block(h)
                want.append([_numpy_distance(f) for f in h.numpy()])
    np.testing.assert_allclose(res.values, np.array(want).T, rtol=1e-5, atol=1e-6)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_mlp_taps_read_the_expansion_features_after_grn():
    model = mobilevision.create_model("convnextv2_atto", num_classes=0, **TINY).eval()
    with torch.no_grad():  # GRN starts as the identity (gamma = beta = 0): give it an effect to see
        for n, p in model.named_parameters():
            if ".grn." in n:
                p.normal_(0, 1.0)
    x = _photos(model)
    res = feature_collapse(model, [x], "mlp")
    block = model.stages[0].blocks[0]
    with torch.no_grad():
        y = block.norm(block.conv_dw(model.stem(x)).permute(0, 2, 3, 1))
        pre = block.mlp.act(block.mlp.fc1(y))  # (B, H, W, 4C)
        post = block.mlp.grn(pre)
    want = [_numpy_distance(f) for f in post.permute(0, 3, 1, 2).numpy()]
    np.testing.assert_allclose(res.values[:, 0], want, rtol=1e-5, atol=1e-6)
    pre_grn = [_numpy_distance(f) for f in pre.permute(0, 3, 1, 2).numpy()]
    assert np.abs(np.array(pre_grn) - np.array(want)).max() > 1e-3  # the tap is after GRN, not before


def test_other_families_use_their_stages_and_mlp_needs_convnext():
    model = mobilevision.create_model("mobilenetv3_small_100", num_classes=0).eval()
    taps = collapse_taps(model)
    assert [t.name for t in taps] == [e["module"] for e in model.feature_info]
    res = feature_collapse(model, [_photos(model, names=("chelsea",))])
    assert res.values.shape == (1, len(model.feature_info)) and np.all((res.values >= 0) & (res.values <= 1))
    with pytest.raises(ValueError, match="ConvNeXt"):
        collapse_taps(model, "mlp")
    with pytest.raises(ValueError, match="not one of"):
        collapse_taps(model, "input")


def test_sample_indices_and_plot(tmp_path):
    assert sample_indices(5, 10) == [0, 1, 2, 3, 4]
    assert sample_indices(100, 3) == [0, 50, 99]
    with pytest.raises(ValueError):
        sample_indices(0, 3)
    model = mobilevision.create_model("convnextv2_atto", num_classes=0, **TINY).eval()
    res = feature_collapse(model, [_photos(model)])
    path = tmp_path / "c.png"
    plot_collapse([("a", res), ("b", res)], path)
    from PIL import Image

    with Image.open(path) as im:
        assert im.size == (700, 420)
