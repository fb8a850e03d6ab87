"""Shipped recipes, overrides, parameter groups and learning-rate schedules."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import mobilevision
from mobilevision.data import train_transform
from mobilevision.train import Recipe, apply_overrides, load_recipe, recipe_names
from mobilevision.train.optim import build_optimizer, layer_depths, param_groups
from mobilevision.train.schedule import LrFactor, build_scheduler

PAPERS = ["mobilenetv2", "mobilenetv3", "efficientnet", "moga", "mobilevit", "mobileformer", "poolformer",
          "convnext", "convnextv2_finetune", "digits"]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.token = nn.Parameter(torch.zeros(1, 2, 4))  # 3-D, exempt by name
        self.fc = nn.Linear(4, 2)

    def no_weight_decay(self):
        return {"token"}


def test_every_paper_has_a_recipe_that_builds():
    assert set(PAPERS) <= set(recipe_names())
    for name in recipe_names():
        r = load_recipe(name)
        assert r.name == name and (r.source or name == "digits"), name
        model = mobilevision.create_model("convnextv2_atto", num_classes=2) if r.layer_decay else Net()
        opt = build_optimizer(model, r, r.lr)
        sched = build_scheduler(opt, r, total_steps=1000, steps_per_epoch=10)
        for _ in range(3):
            opt.step()
            sched.step()
        size = min(r.input_size or 224, 32)
        tf = train_transform((size, size), (0.5,) * 3, (0.5,) * 3, scale=r.scale, ratio=r.ratio, hflip=r.hflip,
                             rand_augment=r.rand_augment, auto_augment=r.auto_augment, random_erase=r.random_erase)
        from PIL import Image

        assert tf(Image.new("RGB", (40, 40), (9, 99, 199))).shape == (3, size, size)


def test_published_values_are_carried():
    v = load_recipe("mobilevit")
    assert v.multi_scale and v.scales == [160, 192, 256, 288, 320] and v.ema_decay == 0.9995
    assert v.warmup_steps == 3000 and v.lr * v.warmup_lr_ratio == pytest.approx(2e-4) and not v.filter_bias_and_bn
    c = load_recipe("convnext")
    assert (c.lr, c.lr_base_batch, c.rand_augment, c.mixup, c.cutmix) == (4e-3, 4096, "rand-m9-mstd0.5-inc1", 0.8, 1.0)
    m = load_recipe("mobilenetv3")
    assert m.optimizer == "rmsproptf" and m.weight_decay == 1e-5 and m.drop_rate == 0.2
    assert load_recipe("efficientnet").decay_rate == 0.97
    assert load_recipe("convnextv2_finetune").label_smoothing == 0.2


def test_overrides_and_errors(tmp_path):
    r = apply_overrides(load_recipe("digits"), ["mixup=0.2", "scales=[16, 24]", "clip_grad=null", "lr=3e-3"], epochs=4)
    assert (r.mixup, r.scales, r.clip_grad, r.lr, r.epochs) == (0.2, [16, 24], None, 3e-3, 4)
    with pytest.raises(ValueError, match=r"unknown recipe key 'mixpu' \(did you mean mixup"):
        apply_overrides(r, ["mixpu=0.2"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(r, ["mixup"])
    with pytest.raises(ValueError, match="'epochs' must be int"):
        apply_overrides(r, ["epochs=ten"])
    with pytest.raises(ValueError, match="optimizer 'adam'"):
        apply_overrides(r, ["optimizer=adam"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\nwarmup_epoch: 3\n")
    with pytest.raises(ValueError, match="'warmup_epoch'"):
        load_recipe(bad)
    with pytest.raises(FileNotFoundError):
        load_recipe(tmp_path / "none.yaml")
    with pytest.raises(ValueError, match="shipped recipes: .*convnext"):
        load_recipe("convnxt")
    good = tmp_path / "mine.yaml"
    good.write_text("name: mine\nlr: 5\nepochs: 2\n")
    assert load_recipe(good).lr == 5.0 and isinstance(load_recipe(good).lr, float)


def test_no_weight_decay_groups():
    groups = param_groups(Net(), 0.05)
    decayed = {id(p) for p in groups[0]["params"]}
    net = Net()
    groups = param_groups(net, 0.05)
    names = {id(p): n for n, p in net.named_parameters()}
    assert sorted(names[id(p)] for p in groups[0]["params"]) == ["conv.weight", "fc.weight"]
    assert sorted(names[id(p)] for p in groups[1]["params"]) == ["bn.bias", "bn.weight", "conv.bias", "fc.bias", "token"]
    assert groups[1]["weight_decay"] == 0.0 and decayed
    assert len(param_groups(net, 0.05, filter_bias_and_bn=False)) == 1
    for opt in ("adamw", "sgd", "rmsprop", "rmsproptf"):
        o = build_optimizer(net, Recipe(optimizer=opt), 0.1)
        assert o.param_groups[0]["weight_decay"] == 0.05 and o.param_groups[1]["weight_decay"] == 0.0


def test_layer_decay_follows_the_convnextv2_rule():
    model = mobilevision.create_model("convnextv2_atto", num_classes=10)  # depths 2, 2, 6, 2: 12 blocks
    depth = layer_depths(model)
    assert depth["stem.0.weight"] == 1 and depth["stages.0.blocks.0.conv_dw.weight"] == 1
    assert depth["stages.1.downsample.1.weight"] == 3 == depth["stages.1.blocks.0.conv_dw.weight"]
    assert depth["stages.2.blocks.5.conv_dw.weight"] == 10 and depth["stages.3.blocks.1.conv_dw.weight"] == 12
    assert depth["head.fc.weight"] == 13 == depth["head.norm.weight"]
    opt = build_optimizer(model, Recipe(layer_decay=0.9, weight_decay=0.05), 1e-3)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert lr_of[id(params["head.fc.weight"])] == pytest.approx(1e-3) == opt.param_groups[0]["lr"]
    assert lr_of[id(params["stem.0.weight"])] == pytest.approx(1e-3 * 0.9 ** 12)
    assert lr_of[id(params["stages.2.blocks.5.conv_dw.weight"])] == pytest.approx(1e-3 * 0.9 ** 3)
    assert wd_of[id(params["stages.2.blocks.5.conv_dw.weight"])] == 0.05
    assert wd_of[id(params["stages.2.blocks.5.conv_dw.bias"])] == 0.0
    sched = build_scheduler(opt, Recipe(warmup_epochs=0, schedule="cosine"), total_steps=10, steps_per_epoch=5)
    opt.step()
    sched.step()
    ratio = lr_of[id(params["stem.0.weight"])] / lr_of[id(params["head.fc.weight"])]
    now = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert now[id(params["stem.0.weight"])] / now[id(params["head.fc.weight"])] == pytest.approx(ratio)
    with pytest.raises(ValueError, match="stages.<i>.blocks.<j>"):
        build_optimizer(mobilevision.create_model("mobilenetv3_small_100"), Recipe(layer_decay=0.9), 1e-3)
    with pytest.raises(ValueError, match="layer_decay"):
        Recipe(layer_decay=1.5).validate()


def test_warmup_cosine_and_step_schedules():
    f = LrFactor("cosine", total_steps=110, warmup_steps=10, warmup_ratio=0.1, min_ratio=0.01)
    assert f(0) == pytest.approx(0.1) and f(5) == pytest.approx(0.55) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.01 + 0.99 * 0.5) and f(110) == pytest.approx(0.01)
    s = LrFactor("step", total_steps=100, warmup_steps=0, decay_steps=2.4, decay_rate=0.97)
    assert s(2) == 1.0 and s(3) == pytest.approx(0.97) and s(5) == pytest.approx(0.97 ** 2)
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    sched = build_scheduler(opt, Recipe(warmup_epochs=1, schedule="cosine"), total_steps=20, steps_per_epoch=10)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[10] == 1.0 and lrs[15] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    state = sched.state_dict()
    opt2 = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    sched2 = build_scheduler(opt2, Recipe(warmup_epochs=1), total_steps=20, steps_per_epoch=10)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_backbone_lr_scale_applies_to_the_backbone_of_a_task_model_only():
    model = mobilevision.create_model("ssdlite_mobilevit_xxs", num_classes=11)
    opt = build_optimizer(model, Recipe(backbone_lr_scale=0.1, weight_decay=0.01), 1e-3)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # the reported group is the full-lr one
    for pid, lr in lr_of.items():
        expected = 1e-4 if names[pid].startswith("backbone.") else 1e-3
        assert lr == pytest.approx(expected), names[pid]
    assert len(lr_of) == sum(1 for _ in model.parameters())
    with pytest.raises(ValueError, match="backbone_lr_scale"):
        Recipe(backbone_lr_scale=0).validate()
