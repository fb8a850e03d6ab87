"""MobileNetV1/V2/V3: published figures, timm parity, the classifier protocol, tables vs the papers."""
from __future__ import annotations

import pytest
import torch

import mobilevision
from mobilevision.models.inverted_residual import InvertedResidual
from mobilevision.models.registry import get_config, published_figures
from zoo_checks import assert_classifier_protocol, assert_matches_published, assert_timm_parity

MODELS = [n for n, row in published_figures().items() if row["family"].startswith("mobilenet")]
PARITY = [n for n in MODELS if published_figures()[n]["parity_with"]]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_all_published_mobilenets_are_registered():
    assert len(MODELS) == 15 and set(MODELS) <= set(mobilevision.list_models("mobilenet*"))


@pytest.mark.parametrize("name", MODELS)
def test_matches_published(name):
    assert_matches_published(name)


@pytest.mark.parametrize("name", PARITY)
def test_timm_parity(name, tmp_path):
    assert published_figures()[name]["parity_with"] == name
    assert_timm_parity(name, tmp_path)  # default 224


@pytest.mark.parametrize("name", MODELS)
def test_classifier_protocol(name):
    assert_classifier_protocol(name, size=64, reductions=[2, 4, 8, 16, 32])


@pytest.mark.parametrize("name, chans", [
    ("mobilenetv1_100", [64, 128, 256, 512, 1024]),
    ("mobilenetv2_100", [16, 24, 32, 96, 320]),
    ("mobilenetv3_large_100", [16, 24, 40, 112, 960]),
    ("mobilenetv3_small_100", [16, 16, 24, 48, 576]),  # the reduction-2 map is the stem's
])
def test_feature_channels_and_out_indices(name, chans):
    assert [f["num_chs"] for f in mobilevision.create_model(name).feature_info] == chans
    fx = mobilevision.create_model(name, features_only=True, out_indices=(1, -1)).eval()
    assert fx.channels() == [chans[1], chans[4]] and fx.reductions() == [4, 32]
    with torch.no_grad():
        maps = fx(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(1, chans[1], 16, 16), (1, chans[4], 2, 2)]


def test_non_square_and_pooled_width():
    model = mobilevision.create_model("mobilenetv3_large_075").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 128)).shape == (1, 1000)
        maps = model.forward_stages(torch.randn(1, 3, 96, 128))
    assert [tuple(m.shape[-2:]) for m in maps] == [(48, 64), (24, 32), (12, 16), (6, 8), (3, 4)]
    assert mobilevision.create_model("mobilenetv3_large_075", num_classes=0).num_features == 1280  # head unscaled


def test_v3_large_matches_paper_table():
    """Hidden widths and SE widths of paper Table 1 (Large 1.0) come out of the exp-ratio table."""
    with torch.device("meta"):
        model = mobilevision.create_model("mobilenetv3_large_100")
    irs = [b for b in model.blocks.modules() if isinstance(b, InvertedResidual)]
    assert [b.conv_pw.out_channels for b in irs] == [64, 72, 72, 120, 120, 240, 200, 184, 184, 480, 672, 672, 960,
                                                     960]
    assert [b.conv_dw.kernel_size[0] for b in irs] == [3, 3, 5, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5]
    assert [b.se.conv_reduce.out_channels for b in irs if hasattr(b.se, "conv_reduce")] == [24, 32, 32, 120, 168,
                                                                                             168, 240, 240]
    assert model.blocks[0][0].has_skip and model.conv_head.bias is not None


def test_v2_widths_per_multiplier():
    """Stem and stage widths of notes_cnn.md section 2 (make_divisible(c * alpha, 8); head >= 1280)."""
    expected = {
        "mobilenetv2_140": (48, [24, 32, 48, 88, 136, 224, 448], 1792),
        "mobilenetv2_075": (24, [16, 24, 24, 48, 72, 120, 240], 1280),
        "mobilenetv2_035": (16, [8, 8, 16, 24, 32, 56, 112], 1280),
    }
    for name, (stem, stages, head) in expected.items():
        with torch.device("meta"):
            model = mobilevision.create_model(name)
        assert model.conv_stem.out_channels == stem
        assert [s[-1].bn3.num_features if hasattr(s[-1], "bn3") else s[-1].bn2.num_features
                for s in model.blocks] == stages
        assert model.num_features == head


def test_minimal_has_no_se_and_relu_only():
    model = mobilevision.create_model("mobilenetv3_large_minimal_100")
    kinds = {type(m) for m in model.modules()}
    assert torch.nn.Hardswish not in kinds and torch.nn.Hardsigmoid not in kinds
    assert not any("se.conv_reduce" in k for k in model.state_dict())
    assert all(m.kernel_size in ((3, 3), (1, 1)) for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_data_config_and_weights():
    assert get_config("mobilenetv1_100").mean == (0.5, 0.5, 0.5)
    assert get_config("mobilenetv3_large_100").weights.hf_hub_id == "timm/mobilenetv3_large_100.ra_in1k"
    assert get_config("mobilenetv2_050").weights.hf_hub_id == "timm/mobilenetv2_050.lamb_in1k"
    with pytest.raises(ValueError, match="no pretrained weights"):
        mobilevision.create_model("mobilenetv2_035", pretrained=True)


def test_in_chans_and_drop_path():
    model = mobilevision.create_model("mobilenetv3_small_100", in_chans=1, drop_path_rate=0.2).eval()
    assert model.conv_stem.in_channels == 1
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 1000)
    with pytest.raises(RuntimeError, match="channels"):
        model(torch.randn(1, 3, 64, 64))
    last = model.blocks[-2][-1]  # last inverted residual: block 10 of 12 (ds, 10 ir, cn)
    assert last.drop_path.drop_prob == pytest.approx(0.2 * 10 / 12)
