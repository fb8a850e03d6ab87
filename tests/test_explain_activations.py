"""explain.activations: one channel-mean map per feature_info stage, and its figure."""
from __future__ import annotations

import pytest
import torch

import mobilevision
from mobilevision.data.config import resolve_data_config
from mobilevision.deploy.inference import sample_photos
from mobilevision.explain import plot_activations, stage_activation_maps
from mobilevision.explain.inputs import image_batch
from mobilevision.explain.plotting import display_image

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["mobilenetv3_small_100", "mobileformer_26m", "convnextv2_atto"])
def test_one_mean_map_per_stage(name):
    model = mobilevision.create_model(name, num_classes=10).eval()
    cfg = resolve_data_config(model, input_size=(64, 64))
    x = image_batch(list(sample_photos(("chelsea", "coffee")).values()), cfg)
    maps = stage_activation_maps(model, x)
    assert len(maps) == len(model.feature_info)
    with torch.no_grad():
        stages = model.forward_stages(x)
    for m, s, info in zip(maps, stages, model.feature_info):
        assert m.shape == (2, 64 // info["reduction"], 64 // info["reduction"])
        assert s.shape[1] == info["num_chs"]
        torch.testing.assert_close(m, s.mean(dim=1))
    assert not torch.equal(maps[0][0], maps[0][1])  # two photos, two maps


def test_display_image_inverts_the_normalisation():
    model = mobilevision.create_model("mobilenetv3_small_100", num_classes=10)
    cfg = resolve_data_config(model, input_size=(48, 48))
    photo = sample_photos(("coffee",))["coffee"]
    x = image_batch([photo], cfg)[0]
    img = display_image(x, cfg)
    assert img.shape == (48, 48, 3) and 0.0 <= img.min() and img.max() <= 1.0
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in cfg.channel_stats)
    torch.testing.assert_close(torch.from_numpy(img).permute(2, 0, 1), (x * std + mean).clamp(0, 1))


def test_figure(tmp_path):
    model = mobilevision.create_model("mobilenetv3_small_100", num_classes=10).eval()
    cfg = resolve_data_config(model, input_size=(64, 64))
    x = image_batch([sample_photos(("chelsea",))["chelsea"]], cfg)
    maps = stage_activation_maps(model, x)
    path = tmp_path / "a.png"
    plot_activations([[m[0].numpy() for m in maps]], [display_image(x[0], cfg)],
                     [e["module"] for e in model.feature_info], path, row_titles=["chelsea"], title="t")
    from PIL import Image

    with Image.open(path) as im:
        assert im.size[0] > 3 * im.size[1]  # one row: input + 5 stages side by side
