"""Segmenters: presets, published sizes, torchvision parity, any-backbone construction."""
from __future__ import annotations

import csv
from importlib import resources

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mobilevision as mv
from mobilevision.tasks import segment

CSV = resources.files("mobilevision.models").joinpath("published_tasks.csv")  # shared/reference/'s copy
ROWS = [r for r in csv.DictReader(CSV.open()) if r["task"] == "segment"]


def _count(name: str, size: int, num_classes: int) -> tuple[int, float]:
    with torch.device("meta"):
        model = mv.create_model(name, num_classes=num_classes).eval()
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, size, size, device="meta"), aux=True)
    return params, fc.get_total_flops() / 2e9


def test_presets_are_registered_and_default_to_21_classes():
    assert set(mv.list_models("deeplabv3_*")) >= {
        "deeplabv3_mobilenetv3_large_100", "deeplabv3_mobilevit_xxs", "deeplabv3_mobilevit_xs",
        "deeplabv3_mobilevit_s", "deeplabv3_mobilenetv2_100"}
    assert "lraspp_mobilenetv3_large_100" in mv.list_models("lraspp*")
    assert "fpn_poolformer_s12" in mv.list_models("fpn_*")
    info = mv.model_info("deeplabv3_mobilevit_xxs")
    assert info["family"] == "deeplabv3" and info["input_size"] == (3, 512, 512)
    with torch.device("meta"):
        model = mv.create_model("lraspp_mobilenetv3_large_100")
    assert model.num_classes == 21 and model.data_config.size == (520, 520)


@pytest.mark.parametrize("row", ROWS, ids=[r["model"] for r in ROWS])
def test_params_and_macs_match_published(row):
    params, gmacs = _count(row["model"], int(row["input_size"]), int(row["num_classes"]))
    want_p = float(row["params_m"]) * 1e6
    assert abs(params - want_p) / want_p * 100 <= float(row["params_tol_pct"]), (params, want_p)
    if row["gmacs"]:
        want = float(row["gmacs"])
        within = abs(gmacs - want) / want * 100 <= float(row["gmacs_tol_pct"])
        if row["model"] == "deeplabv3_mobilenetv2_100" and not within:
            # The paper's 5.8 B MAdds do not follow from its own layout: the same head without the three atrous
            # branches counts 2.73 B at 513 px here, the paper's 2.75 B, but with them 5.36 B (5.07 B at 512).
            # Only this known gap is excused; a count that moves into the tolerance passes.
            pytest.xfail(f"MobileNetV2 paper MAdds {want} B vs {gmacs:.2f} B counted (params match)")
        assert within, (gmacs, want)


def test_fpn_poolformer_s12_size_matches_the_poolformer_paper():
    # PoolFormer paper, Semantic FPN on ADE20K (150 classes): S12 15.7 M params.
    params, gmacs = _count("fpn_poolformer_s12", 512, 150)
    assert abs(params / 1e6 - 15.7) / 15.7 < 0.01, params


# ------------------------------------------------------------------------------------------ torchvision parity
def _perturb(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    for name, m in model.named_modules():  # larger logits, so a 1e-4 match means something
        if isinstance(m, torch.nn.Conv2d) and m.out_channels == 21:
            m.weight.data.mul_(20)


def _photos(size: tuple[int, int]) -> torch.Tensor:
    import skimage.data

    imgs = []
    for name in ("astronaut", "coffee", "chelsea"):
        x = torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])).permute(2, 0, 1)
        imgs.append(torch.nn.functional.interpolate(x[None].float() / 255, size=size, mode="bilinear",
                                                    antialias=True)[0])
    x = torch.stack(imgs)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return (x - mean) / std


@pytest.fixture(scope="module")
def torchvision_pairs(tmp_path_factory):
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large, lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    pairs = {}
    for name, fn, kw in (("deeplabv3_mobilenetv3_large_100", deeplabv3_mobilenet_v3_large, dict(aux_loss=True)),
                         ("lraspp_mobilenetv3_large_100", lraspp_mobilenet_v3_large, {})):
        tv = fn(weights=None, weights_backbone=None, **kw).eval()
        _perturb(tv)
        path = tmp_path_factory.mktemp("tv") / f"{name}.pth"
        torch.save(tv.state_dict(), path)
        pairs[name] = (tv, mv.create_model(name, checkpoint_path=path).eval())
    return pairs


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last_inside", "nchw"])
@pytest.mark.parametrize("size", [(520, 520), (389, 467)])
@pytest.mark.parametrize("name", ["deeplabv3_mobilenetv3_large_100", "lraspp_mobilenetv3_large_100"])
def test_torchvision_state_dict_loads_with_identical_outputs(torchvision_pairs, name, size, channels_last,
                                                             monkeypatch):
    # in NCHW at 520 px DeepLabv3's rate-24 and -36 branches run tap by tap (33x33 map), at 389 x 467 rate 36
    tv, ours = torchvision_pairs[name]
    monkeypatch.setattr(ours, "channels_last_inference", channels_last)
    x = _photos(size)
    with torch.no_grad():
        want, got = tv(x), ours(x, aux=True)
    assert set(got) == set(want)
    for key in want:
        assert got[key].shape == (3, 21, *size) and got[key].is_contiguous()
        assert want[key].abs().max() > 1.0  # the comparison is not between near-zero maps
        torch.testing.assert_close(got[key], want[key], atol=1e-4, rtol=0)


def test_torchvision_file_without_aux_loads_into_the_aux_preset_except_its_aux(tmp_path):
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    tv = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=False)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    with pytest.raises(ValueError, match="missing keys, first: aux_head"):
        mv.create_model("deeplabv3_mobilenetv3_large_100", checkpoint_path=tmp_path / "tv.pth")
    model = mv.create_segmenter("deeplabv3", "mobilenetv3_large_100", taps=("blocks.2.0", "blocks.6"),
                                backbone_overrides=dict(bn_eps=1e-3)).eval()
    mv.load_checkpoint(model, tmp_path / "tv.pth")
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["out"], tv.eval()(x)["out"], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------- any backbone
@pytest.mark.parametrize("head,backbone,os_", [
    ("deeplabv3", "mobilenetv3_small_100", 16), ("deeplabv3", "efficientnet_b0", 8),
    ("lraspp", "mobilenetv2_050", 16), ("lraspp", "mobilevit_xxs", 16), ("deeplabv3", "poolformer_s12", 32),
    ("fpn", "poolformer_s12", 32), ("fpn", "convnextv2_atto", 32),
])
def test_any_backbone_gives_input_size_logits(head, backbone, os_):
    torch.manual_seed(0)
    model = mv.create_segmenter(head, backbone, num_classes=5, output_stride=os_, aux=head == "deeplabv3").eval()
    reductions = [f["reduction"] for f in model.backbone.feature_info]
    assert max(reductions) == os_
    x = torch.randn(2, 3, 97, 130)
    with torch.no_grad():
        out = model(x)
    assert list(out) == ["out"] and out["out"].shape == (2, 5, 97, 130)
    model.train()
    out = model(x)
    if head == "deeplabv3":
        assert out["aux"].shape == (2, 5, 97, 130)
    out["out"].mean().backward()


def test_output_stride_really_dilates():
    model = mv.create_segmenter("deeplabv3", "mobilenetv3_large_100", output_stride=8).eval()
    maps = model.backbone(torch.zeros(1, 3, 128, 128))
    assert [m.shape[-1] for m in maps] == [16, 16]


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="deeplabv3, lraspp, fpn"):
        mv.create_segmenter("unet", "mobilenetv3_large_100")
    with pytest.raises(ValueError, match="'pool' token mixer.*use output_stride=32"):
        mv.create_segmenter("deeplabv3", "poolformer_s12", output_stride=16)
    with pytest.raises(ValueError, match="no auxiliary head"):
        mv.create_segmenter("lraspp", "mobilenetv3_large_100", aux=True)
    with pytest.raises(ValueError, match="unknown model"):
        mv.create_segmenter("deeplabv3", "mobilenetv9")
