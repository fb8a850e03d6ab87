"""EfficientNet B0-B7: published figures, compound scaling, timm parity, the classifier protocol."""
from __future__ import annotations

import pytest
import torch

import mobilevision
from mobilevision.models.inverted_residual import DepthwiseSeparable, InvertedResidual
from mobilevision.models.efficientnet import SCALING
from mobilevision.models.registry import get_config, published_figures
from zoo_checks import assert_classifier_protocol, assert_matches_published, assert_timm_parity

MODELS = [f"efficientnet_b{i}" for i in range(8)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", MODELS)
def test_matches_published(name):
    assert_matches_published(name)


@pytest.mark.parametrize("name", MODELS)
def test_timm_parity(name, tmp_path):
    assert published_figures()[name]["parity_with"] == name
    # B0 at its default 224; the larger ones at 128 to stay fast (parity does not depend on the size).
    assert_timm_parity(name, tmp_path, size=None if name == "efficientnet_b0" else 128)


# Notes section 4, "Scaled widths and repeats": stem, stage widths, repeats, head.
SCALED = {
    "efficientnet_b0": (32, [16, 24, 40, 80, 112, 192, 320], [1, 2, 2, 3, 3, 4, 1], 1280),
    "efficientnet_b1": (32, [16, 24, 40, 80, 112, 192, 320], [2, 3, 3, 4, 4, 5, 2], 1280),
    "efficientnet_b2": (32, [16, 24, 48, 88, 120, 208, 352], [2, 3, 3, 4, 4, 5, 2], 1408),
    "efficientnet_b3": (40, [24, 32, 48, 96, 136, 232, 384], [2, 3, 3, 5, 5, 6, 2], 1536),
    "efficientnet_b4": (48, [24, 32, 56, 112, 160, 272, 448], [2, 4, 4, 6, 6, 8, 2], 1792),
    "efficientnet_b5": (48, [24, 40, 64, 128, 176, 304, 512], [3, 5, 5, 7, 7, 9, 3], 2048),
    "efficientnet_b6": (56, [32, 40, 72, 144, 200, 344, 576], [3, 6, 6, 8, 8, 11, 3], 2304),
    "efficientnet_b7": (64, [32, 48, 80, 160, 224, 384, 640], [4, 7, 7, 10, 10, 13, 4], 2560),
}


@pytest.mark.parametrize("name", MODELS)
def test_compound_scaling(name):
    stem, widths, repeats, head = SCALED[name]
    with torch.device("meta"):
        model = mobilevision.create_model(name)
    assert model.conv_stem.out_channels == stem and model.num_features == head
    assert [len(s) for s in model.blocks] == repeats
    assert [s[-1].conv_pwl.out_channels if isinstance(s[-1], InvertedResidual) else s[-1].conv_pw.out_channels
            for s in model.blocks] == widths
    # SE width = int(block input / 4) with swish inside and a sigmoid gate.
    for stage in model.blocks:
        for blk in stage:
            in_chs = blk.conv_dw.in_channels if isinstance(blk, DepthwiseSeparable) else blk.conv_pw.in_channels
            assert blk.se.conv_reduce.out_channels == in_chs // 4
            assert isinstance(blk.se.act1, torch.nn.SiLU) and isinstance(blk.se.gate, torch.nn.Sigmoid)
    sc = SCALING[name]
    assert get_config(name).input_size == (3, sc.resolution, sc.resolution)
    assert model.recipe_drop_rate == sc.dropout


def test_classifier_protocol_b0():
    assert_classifier_protocol("efficientnet_b0", size=64, reductions=[2, 4, 8, 16, 32])
    assert [f["num_chs"] for f in mobilevision.create_model("efficientnet_b0").feature_info] == [16, 24, 40, 112, 320]
    fx = mobilevision.create_model("efficientnet_b0", features_only=True, out_indices=(0, 3))
    assert fx.channels() == [16, 112] and fx.reductions() == [2, 16]


def test_non_square_and_dropout():
    model = mobilevision.create_model("efficientnet_b0", drop_rate=0.3, drop_path_rate=0.2).eval()
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert a.shape == (1, 1000) and torch.equal(a, b)  # dropout / drop-path are off in eval
    model.train()
    assert not torch.equal(model(x), model(x))
    # Drop-path grows per block as rate * idx / N (N = 16 blocks): the last block gets 0.2 * 15 / 16.
    assert model.blocks[-1][-1].drop_path.drop_prob == pytest.approx(0.2 * 15 / 16)


def test_data_configs_follow_timm():
    assert get_config("efficientnet_b0").weights.hf_hub_id == "timm/efficientnet_b0.ra_in1k"
    assert get_config("efficientnet_b5").crop_pct == 1.0
    assert get_config("efficientnet_b7").weights.hf_hub_id is None
    with pytest.raises(ValueError, match="without trained weights"):
        mobilevision.create_model("efficientnet_b6", pretrained=True)
