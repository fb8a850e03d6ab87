"""The inverted-residual block builder: specs, SE width rules, shortcut rule, drop-path schedule, feature info."""
from __future__ import annotations

import pytest
import torch

from mobilevision.layers.drop_path import DropPath
from mobilevision.models.inverted_residual import (
    BlockSpec, DepthwiseSeparable, InvertedResidual, SERule, build_stages, make_block,
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("bad, match", [
    (dict(kind="mb"), "kind 'mb'"),
    (dict(kind="ir", kernel=4), "kernel"),
    (dict(kind="ir", stride=3), "stride"),
    (dict(kind="ir", out_chs=0), "out_chs"),
    (dict(kind="ir", se=1.5), "se ratio"),
    (dict(kind="ir", repeats=0), "repeats"),
])
def test_blockspec_rejects_bad_values(bad, match):
    args = dict(kernel=3, stride=1, out_chs=8) | bad
    with pytest.raises(ValueError, match=match):
        BlockSpec(**args)


def test_se_width_rules():
    # MobileNetV3: make_divisible(hidden / 4, 8); EfficientNet: int(block_in / 4); MoGA: hidden // 4.
    assert SERule("divisible").reduced_chs(72, 24, 0.25) == 24
    assert SERule("divisible").reduced_chs(16, 16, 0.25) == 8
    assert SERule("block_in").reduced_chs(240, 40, 0.25) == 10
    assert SERule("floor").reduced_chs(120, 40, 0.25) == 30
    with pytest.raises(ValueError, match="width"):
        SERule("ceil")


def test_block_widths_acts_and_shortcut():
    spec = BlockSpec("ir", 5, 1, 40, exp=3, se=0.25)
    blk = make_block(spec, 40, 1, act="hard_swish", se_rule=SERule("floor", act=None, gate="hard_sigmoid"),
                     hidden_divisor=1)
    assert isinstance(blk, InvertedResidual) and blk.has_skip
    assert blk.conv_pw.out_channels == 120 and blk.conv_dw.groups == 120 and blk.conv_dw.padding == (2, 2)
    assert blk.se.conv_reduce.out_channels == 30
    assert isinstance(blk.se.act1, torch.nn.Hardswish) and isinstance(blk.se.gate, torch.nn.Hardsigmoid)
    assert not make_block(spec, 24, 1, act="relu", se_rule=SERule()).has_skip  # in != out
    assert not make_block(spec, 40, 2, act="relu", se_rule=SERule()).has_skip  # strided
    ds = make_block(BlockSpec("ds", 3, 1, 16, skip=False), 16, 1, act="relu", se_rule=SERule())
    assert isinstance(ds, DepthwiseSeparable) and not ds.has_skip
    x = torch.randn(2, 40, 9, 11)
    assert blk(x).shape == (2, 40, 9, 11)


def test_build_stages_drop_path_and_features():
    stages = [
        [BlockSpec("ds", 3, 1, 16)],
        [BlockSpec("ir", 3, 2, 24, exp=4, repeats=2)],
        [BlockSpec("ir", 5, 2, 40, exp=3, se=0.25)],
        [BlockSpec("ir", 3, 2, 80, exp=6, repeats=2), BlockSpec("ir", 3, 1, 112, exp=6)],
        [BlockSpec("ir", 5, 2, 160, exp=6)],
        [BlockSpec("cn", 1, 1, 960)],
    ]
    blocks, info, out = build_stages(stages, 16, act="hard_swish", drop_path_rate=0.4)
    assert out == 960
    flat = [b for stage in blocks for b in stage]
    assert len(flat) == 9
    rates = [b.drop_path.drop_prob if isinstance(getattr(b, "drop_path", None), DropPath) else 0.0 for b in flat]
    assert rates == pytest.approx([0.4 * i / 9 for i in range(9)][:8] + [0.0])  # cn blocks have no shortcut
    assert [f["reduction"] for f in info] == [2, 4, 8, 16, 32]
    assert [f["module"] for f in info] == ["blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.5"]
    assert [f["num_chs"] for f in info] == [16, 24, 40, 112, 960]
    # A strided first block makes the stem output the reduction-2 map.
    _, info2, _ = build_stages([[BlockSpec("ds", 3, 2, 16)], [BlockSpec("ir", 3, 2, 24)]], 16, act="relu")
    assert [(f["module"], f["reduction"]) for f in info2] == [("bn1", 2), ("blocks.0", 4), ("blocks.1", 8)]


def test_drop_path_active_only_in_training():
    blk = make_block(BlockSpec("ir", 3, 1, 8, exp=2), 8, 1, act="relu", se_rule=SERule(), drop_path=0.5)
    x = torch.randn(16, 8, 4, 4)
    blk.eval()
    a, b = blk(x), blk(x)
    assert torch.equal(a, b)
    blk.train()
    torch.manual_seed(0)
    c = blk(x)
    torch.manual_seed(1)
    d = blk(x)
    assert not torch.allclose(c, d)
