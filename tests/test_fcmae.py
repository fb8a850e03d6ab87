"""FCMAE: masking leaks nothing, no mask = the plain encoder, loss goes down, the saved encoder loads and fine-tunes."""
from __future__ import annotations

import json

import pytest
import torch

import mobilevision
from mobilevision.models.convnext import ConvNeXt
from mobilevision.models.registry import ModelConfig, WeightSource, register_model
from mobilevision.tasks.fcmae import FCMAE, FCMAETask, random_mask, upsample_mask

TINY = "test_fcmae_convnextv2"
if TINY not in mobilevision.models.registry._REGISTRY:
    register_model(ModelConfig(TINY, "convnextv2", ConvNeXt, input_size=(3, 64, 64),
                               kwargs={"depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32), "ls_init_value": None,
                                       "use_grn": True}, weights=WeightSource(note="test model")))


def _randomise_grn(model: torch.nn.Module) -> None:
    # GRN starts as the identity (zero weight / bias): make it act, so per-sample statistics matter
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".grn." in n:
                p.normal_(std=0.5)


@pytest.fixture(scope="module")
def atto() -> FCMAE:
    torch.manual_seed(0)
    m = FCMAE("convnextv2_atto").eval()
    _randomise_grn(m)
    return m


def test_masked_pixels_never_reach_visible_positions(atto):
    x = torch.randn(2, 3, 64, 96)
    mask = random_mask(2, (2, 3), 0.6)
    keep = 1 - upsample_mask(mask, (2, 3), 32)  # (B, 1, H, W) at pixel level
    x2 = x * keep + 5 * torch.randn_like(x) * (1 - keep)  # new pixels under the mask only
    with torch.no_grad():
        f1, _ = atto.forward_encoder(x, mask=mask)
        f2, _ = atto.forward_encoder(x2, mask=mask)
        visible = (1 - mask).reshape(2, 1, 2, 3)
        assert torch.equal(f1 * visible, f2 * visible)
        assert float((f1 * visible).abs().mean()) > 0.01  # the visible features are not trivially zero
        assert torch.equal(f1 * (1 - visible), torch.zeros_like(f1))  # masked positions are empty, as sparse
        # the plain dense encoder does leak through the 7x7 convs: the masking is what prevents it
        d1, d2 = atto.encoder.forward_features(x), atto.encoder.forward_features(x2)
        assert float(((d1 - d2) * visible).abs().max()) > 1e-3


def test_mask_ratio_zero_is_the_plain_encoder(atto):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f, mask = atto.forward_encoder(x, mask_ratio=0.0)
        ref = atto.encoder.forward_features(x)
    assert mask.sum() == 0
    torch.testing.assert_close(f, ref, rtol=0, atol=1e-6)


def test_masks_follow_torch_seed_and_ratio():
    torch.manual_seed(3)
    a = random_mask(4, (7, 7), 0.6)
    torch.manual_seed(3)
    b = random_mask(4, (7, 7), 0.6)
    assert torch.equal(a, b)
    assert a.sum(1).tolist() == [30.0] * 4  # keep int(49 * 0.4) = 19, as the official code
    assert not torch.equal(a[0], a[1])  # per sample
    up = upsample_mask(a, (7, 7), 8)
    assert up.shape == (4, 1, 56, 56) and torch.equal(up[:, 0, ::8, ::8].reshape(4, 49), a)
    with pytest.raises(ValueError, match="mask ratio"):
        random_mask(1, (2, 2), 1.0)


def test_bad_input_is_rejected(atto):
    with pytest.raises(ValueError, match="multiples of 32"):
        atto(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match="ConvNeXt V2"):
        FCMAE("mobilenetv2_100")


def test_shapes_and_loss_on_masked_patches_only(atto):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    loss, pred, mask = atto(x)
    assert pred.shape == (2, 32 * 32 * 3, 2, 2) and mask.shape == (2, 4)
    # recompute by hand: per-patch normalised targets, MSE averaged over masked patches
    t = atto.patchify(x)
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    per = ((pred.flatten(2).transpose(1, 2) - t) ** 2).mean(-1)
    torch.testing.assert_close(loss, (per * mask).sum() / mask.sum())
    torch.testing.assert_close(atto.unpatchify(atto.patchify(x), (2, 2)), x, rtol=0, atol=0)


def test_pretraining_loss_decreases_on_digits():
    from mobilevision.data import DigitsSource, eval_transform

    torch.manual_seed(0)
    src = DigitsSource("train", image_size=64)
    tf = eval_transform((64, 64), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop_pct=1.0)
    x = torch.stack([tf(src.load(i)[0]) for i in range(16)])
    model = FCMAE("convnextv2_atto", decoder_dim=128).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-3, betas=(0.9, 0.95))
    mask = random_mask(16, (2, 2), 0.6)
    losses = []
    for _ in range(8):
        loss, _, _ = model(x, mask=mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def _pretrain_recipe(*pairs: str, **values):
    from mobilevision.train import apply_overrides, load_recipe

    return apply_overrides(load_recipe("fcmae_digits"), ["task_options.decoder_dim=16", "task_options.vis_images=2",
                                                         "threads=1", *pairs], **values)


def test_pretrain_run_saves_an_encoder_that_create_model_and_fit_load(tmp_path):
    from mobilevision.train import fit

    recipe = _pretrain_recipe(epochs=1, batch_size=256)
    s = fit(FCMAETask(TINY, recipe.task_options), recipe, "digits", tmp_path / "pre", device="cpu")
    assert s["steps"] == 5 and s["final_loss"] is not None and s["task"] == "fcmae"
    rows = [json.loads(r) for r in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and (tmp_path / "pre" / "reconstructions" / "epoch_001.png").stat().st_size > 0
    with pytest.raises(ValueError, match="already holds a run"):
        fit(FCMAETask(TINY, recipe.task_options), recipe, "digits", tmp_path / "pre", device="cpu")

    enc = tmp_path / "pre" / "last"
    state = torch.load(tmp_path / "pre" / "last" / "train_state.pt", weights_only=True)["model"]
    model = mobilevision.create_model(TINY, checkpoint_path=enc, num_classes=10)
    fresh = mobilevision.create_model(TINY, num_classes=10)
    assert set(model.state_dict()) == set(fresh.state_dict())
    for k, v in model.state_dict().items():  # every encoder weight is the pre-trained one, the head is new
        if not k.startswith("head.fc."):
            assert torch.equal(v, state["encoder." + k]), k

    # `mobilevision train --init` fine-tunes from the encoder: with a vanishing lr the trained weights stay the encoder's
    from mobilevision.cli import main

    assert main(["train", "--model", TINY, "--data", "digits", "--init", str(enc), "--epochs", "1",
                 "--batch-size", "256", "--lr", "1e-12", "--set", "input_size=64", "--output", str(tmp_path / "ft")]) == 0
    tuned = mobilevision.create_model(TINY, checkpoint_path=tmp_path / "ft" / "last")
    for k, v in tuned.state_dict().items():
        if not k.startswith("head.fc."):
            torch.testing.assert_close(v, state["encoder." + k], rtol=0, atol=1e-8, msg=k)
    assert json.loads((tmp_path / "ft" / "summary.json").read_text())["final_top1"] is not None
    assert main(["train", "--model", TINY, "--data", "digits", "--init", str(tmp_path / "none"),
                 "--output", str(tmp_path / "ft2")]) == 2


def test_pretrain_gains_the_engine_features(tmp_path):
    """EMA, threads, deterministic mode and gradient accumulation reach FCMAE through the one engine."""
    from mobilevision.train import fit

    seen = {}
    forward = FCMAE.forward

    def spy(self, imgs, mask_ratio=None, mask=None):
        if self.training:
            seen.setdefault("batches", []).append(imgs.shape[0])
            seen["threads"] = torch.get_num_threads()
            seen["deterministic"] = torch.are_deterministic_algorithms_enabled()
        return forward(self, imgs, mask_ratio, mask)

    recipe = _pretrain_recipe("ema=true", "ema_decay=0.9", "accum_steps=2", "threads=2", "deterministic=true",
                              "clip_grad=1.0", epochs=1, batch_size=128)
    FCMAE.forward = spy
    try:
        s = fit(FCMAETask(TINY, recipe.task_options), recipe, "digits", tmp_path / "acc", device="cpu")
    finally:
        FCMAE.forward = forward
        torch.use_deterministic_algorithms(False)
    assert seen["threads"] == 2 and seen["deterministic"]
    assert s["steps"] == 11 == len(seen["batches"]) and set(seen["batches"]) == {128}
    state = torch.load(tmp_path / "acc" / "last" / "train_state.pt", weights_only=True)
    assert state["scheduler"]["last_epoch"] == 6  # ceil(11 / 2) optimizer steps
    row = json.loads((tmp_path / "acc" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["ema_loss"] is not None and row["ema_loss"] != row["val_loss"]
    assert state["ema"] is not None


def test_pretrain_compile_option_reaches_torch_compile(tmp_path, monkeypatch):
    from mobilevision.train import engine, fit

    wrapped = []
    monkeypatch.setattr(engine.torch, "compile", lambda m, **kw: wrapped.append(type(m).__name__) or m)
    recipe = _pretrain_recipe("compile=true", epochs=1, batch_size=256)
    fit(FCMAETask(TINY, recipe.task_options), recipe, "digits", tmp_path / "c", device="cpu")
    assert wrapped == ["FCMAE"]


def test_fcmae_recipes_are_yaml_and_options_are_checked():
    from mobilevision.train import apply_overrides, load_recipe, recipe_names

    assert {"fcmae", "fcmae_digits"} <= set(recipe_names())
    r = load_recipe("fcmae")
    assert r.task == "fcmae" and r.task_options["mask_ratio"] == 0.6 and r.task_options["decoder_dim"] == 512
    assert (r.lr, r.lr_base_batch, r.betas, r.warmup_epochs) == (1.5e-4, 256, [0.9, 0.95], 40.0)
    assert apply_overrides(r, ["task_options.mask_ratio=0.75"]).task_options["mask_ratio"] == 0.75
    with pytest.raises(ValueError, match="unknown task_options key 'mask_ration'.*mask_ratio"):
        apply_overrides(r, ["task_options.mask_ration=0.75"])
    with pytest.raises(ValueError, match="mask_ratio must be in"):
        apply_overrides(r, ["task_options.mask_ratio=1.5"])
    with pytest.raises(ValueError, match="takes no task_options"):
        apply_overrides(load_recipe("digits"), ["task_options.mask_ratio=0.5"])
    with pytest.raises(ValueError, match="unknown task 'fcmea'"):
        apply_overrides(r, ["task=fcmea"])
