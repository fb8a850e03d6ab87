"""The engine's behaviour a user sees (issue 12): recipe choice for a photo folder, warnings as log lines,
finished-run resume, one-line errors, 1-based epochs, EMA warm-up, thread and lr defaults."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import test_train  # noqa: F401  (registers test_train_tiny)
from mobilevision.cli import main
from mobilevision.train import apply_overrides, default_recipe, load_recipe

TINY = ["--model", "test_train_tiny"]
QUICK = ["--set", "threads=1", "--set", "checkpoint_every=0", "--batch-size", "8", "--epochs", "1"]


def _photos(root: Path, classes=("cat", "dog"), n=(8, 4)) -> Path:
    g = torch.Generator().manual_seed(0)
    for split, count in zip(("train", "val"), n):
        for k, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(count):
                arr = (torch.rand(30, 40, 3, generator=g) * 60 + 60 * k).to(torch.uint8).numpy()
                Image.fromarray(arr).save(d / f"{i}.jpg")
    return root


def _err_lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def test_photo_folder_uses_the_models_paper_or_generic_recipe_at_its_own_size(tmp_path, capsys):
    data = _photos(tmp_path / "photos")
    assert main(["train", *TINY, "--data", str(data), "--output", str(tmp_path / "a"), *QUICK]) == 0
    err = "\n".join(_err_lines(capsys))
    assert "(recipe generic: no paper recipe" in err and "16 px (the model's input size)" in err
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["recipe"]["name"] == "generic" and s["input_size"] == 16  # not digits' 48 px
    assert main(["train", *TINY, "--data", str(data), "--output", str(tmp_path / "b"), "--input-size", "24",
                 *QUICK]) == 0
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["input_size"] == 24
    assert default_recipe("mobilenetv3_small_100", str(data))[0] == "mobilenetv3"
    assert default_recipe("mobilevit_xxs", str(data))[0] == "mobilevit"
    assert default_recipe("mobilenetv1_100", str(data))[0] == "generic"
    assert default_recipe("mobilevit_xxs", "digits")[0] == "digits"


def test_one_class_folder_warns_through_the_log(tmp_path, capsys):
    data = _photos(tmp_path / "one", classes=("cat",))
    assert main(["train", *TINY, "--data", str(data), "--output", str(tmp_path / "r"), *QUICK]) == 0
    lines = [ln for ln in _err_lines(capsys) if "single class" in ln]
    assert len(lines) == 1


def test_python_warnings_become_one_log_line_each(tmp_path, capsys):
    test_train._bad_folder(tmp_path / "data")
    assert main(["train", *TINY, "--data", str(tmp_path / "data"), "--output", str(tmp_path / "r"), *QUICK]) == 0
    err = _err_lines(capsys)
    skipped = [ln for ln in err if "skipping unreadable image" in ln]
    assert len(skipped) == 3 and all("warning:" in ln for ln in skipped)
    assert not any("warnings.warn" in ln or "UserWarning" in ln for ln in err), err


def test_resume_of_a_finished_run_says_so_and_a_larger_epochs_extends_it(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", *TINY, "--data", "digits", "--output", str(run), "--set", "input_size=16", "--set", "threads=1",
            "--set", "checkpoint_every=0", "--batch-size", "64"]
    assert main([*base, "--epochs", "1"]) == 0
    first = json.loads((run / "summary.json").read_text())
    capsys.readouterr()
    assert main([*base, "--resume"]) == 0
    assert "is finished (1 epochs)" in capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text()) == first
    assert main([*base, "--resume", "--epochs", "2"]) == 0
    assert "extending the run from 1 to 2 epochs" in capsys.readouterr().err
    s = json.loads((run / "summary.json").read_text())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert s["epochs"] == 2 and s["steps"] == 2 * first["steps"] and [r["epoch"] for r in rows] == [1, 2]
    assert 1 <= s["best_epoch"] <= 2  # 1-based, as the log
    best = json.loads((run / "best" / "config.json").read_text())
    assert best["epoch"] == s["best_epoch"]
    assert main([*base, "--resume", "--epochs", "1"]) == 2  # cannot shorten below what is done


def test_bad_values_are_one_line_errors_before_training(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    cases = [
        (["--data", "digits", "--set", "scales=[160,abc]", "--output", str(tmp_path / "o")], "'scales'"),
        (["--data", "digits", "--output", str(tmp_path / "file.txt")], "is an existing file"),
        (["--data", "digits", "--set", "accum_steps=0", "--output", str(tmp_path / "o")], "accum_steps"),
        (["--data", "digits", "--recipe", "fcmae_digits", "--output", str(tmp_path / "o")], "pretrain"),
    ]
    for extra, needle in cases:
        assert main(["train", *TINY, *extra]) == 2, extra
        err = _err_lines(capsys)
        assert len(err) == 1 and needle in err[0], (extra, err)
    assert not (tmp_path / "o").exists()


def test_ema_warmup_follows_the_model_early():
    from mobilevision.train.ema import build_ema, ema_decay_at

    assert ema_decay_at(1, 0.99, True) == pytest.approx(1 - 2 ** (-2 / 3)) and ema_decay_at(0, 0.99, True) == 0
    assert ema_decay_at(10_000, 0.99, True) == 0.99 and ema_decay_at(0, 0.99, False) == 0.99
    lag = {}
    for warm in (False, True):
        model = torch.nn.Linear(1, 1, bias=False)
        ema = build_ema(model, 0.99, warmup=warm)
        for step in range(50):
            with torch.no_grad():
                model.weight.fill_(float(step))
            ema.update_parameters(model)
        lag[warm] = 49 - float(ema.module.weight.detach())
    assert lag[True] < 0.5 * lag[False] and lag[False] > 30  # an un-warmed 0.99 average is still near its start
    assert load_recipe("digits").ema_warmup


def test_digits_lr_scales_with_the_global_batch_and_threads_default():
    from mobilevision.train.engine import resolve_threads

    r = load_recipe("digits")
    assert r.lr_base_batch == r.batch_size  # lr holds at one process; torchrun's global batch scales it
    assert resolve_threads(None) is None and resolve_threads(3) == 3
    assert resolve_threads(0, local_ranks=64) == 1
    with pytest.raises(ValueError, match="threads"):
        apply_overrides(r, ["threads=-1"])


@pytest.mark.parametrize("policy, warned", [("", True), ("ACTIVE", True), ("PASSIVE", False)])
def test_spinning_openmp_threads_are_reported(policy, warned, monkeypatch, caplog):
    from mobilevision.train import engine
    from mobilevision.train.distributed import DistInfo

    monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    log = engine.logger
    log.addHandler(caplog.handler)  # a run's logging set-up stops propagation to the root logger
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        engine._warn_if_spinning(DistInfo())
    finally:
        torch.set_num_threads(before)
        log.removeHandler(caplog.handler)
    assert ("OMP_WAIT_POLICY=PASSIVE" in caplog.text) == warned
