"""End-to-end training on a tiny model registered here: outputs, eval, SIGKILL + resume equality, DDP, bad input.

Run as a script (`python tests/test_train.py train ...`), this file registers the tiny model and calls the CLI,
so subprocesses and torchrun see the same model.
"""
from __future__ import annotations

import json
import os
import socket
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

import mobilevision
from mobilevision.models.registry import ModelConfig, WeightSource, register_model
from zoo_checks import TwoStageTestClassifier

HERE = Path(__file__).resolve()


class TrainTiny(TwoStageTestClassifier):
    """conv-BN-ReLU x2 -> pool -> dropout -> linear: BN buffers and dropout make resume bugs visible."""

    def __init__(self, num_classes=1000, in_chans=3, drop_rate=0.0, drop_path_rate=0.0, width=8):
        super().__init__(
            nn.Sequential(nn.Conv2d(in_chans, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()),
            nn.Sequential(nn.Conv2d(width, width * 2, 3, 2, 1, bias=False), nn.BatchNorm2d(width * 2), nn.ReLU()),
            width, num_classes)
        self.drop = nn.Dropout(drop_rate)

    def pool_and_drop(self, x):
        return self.drop(x.mean((2, 3)))


if "test_train_tiny" not in mobilevision.models.registry._REGISTRY:
    register_model(ModelConfig("test_train_tiny", "test", TrainTiny, input_size=(3, 16, 16),
                               weights=WeightSource(note="test model")))

# 2 short epochs on digits at 16 px; checkpoints every 10 steps; dropout + label smoothing + EMA + mixup on
FAST = ["--set", "input_size=16", "--set", "threads=1", "--set", "checkpoint_every=10", "--set", "drop_rate=0.1",
        "--set", "ema=true", "--set", "ema_decay=0.9", "--set", "mixup=0.2", "--set", "lr=0.01",
        "--epochs", "2", "--batch-size", "32"]


def _cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(HERE), *args], capture_output=True, text=True, env=env, **kw)


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "seconds")} for r in rows]


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_train_outputs_and_eval(tmp_path):
    from mobilevision.cli import main

    run = tmp_path / "run"
    assert main(["train", "--model", "test_train_tiny", "--data", "digits", "--output", str(run), *FAST]) == 0
    rows = _metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]  # 1-based, as the log (issue 12)
    for key in ("train_loss", "lr", "val_top1", "val_top5", "ema_top1"):
        assert all(r[key] is not None for r in rows), key
    summary = json.loads((run / "summary.json").read_text())
    for key in ("best_top1", "final_top1", "epochs", "seconds", "skipped_images", "model", "recipe"):
        assert key in summary
    assert summary["skipped_images"] == 0 and summary["model"] == "test_train_tiny"
    assert summary["final_top1"] > 30.0  # 10 classes: chance is 10%
    assert summary["recipe"]["input_size"] == 16 and (run / "recipe.yaml").is_file()
    assert (run / "curves.png").stat().st_size > 1000
    assert any((run / "tensorboard").iterdir())
    assert (run / "last" / "train_state.pt").is_file()
    # best/ is a save_pretrained directory: create_model restores it without code changes
    model = mobilevision.create_model("test_train_tiny", checkpoint_path=run / "best")
    assert model.num_classes == 10 and model.labels == [str(i) for i in range(10)]
    # ... with the preprocessing the run evaluated with (the recipe's crop_pct 1.0, not the registry's default)
    assert mobilevision.models.registry.get_config("test_train_tiny").data_config().crop_pct != 1.0
    assert model.default_cfg["crop_pct"] == 1.0 and tuple(model.default_cfg["input_size"]) == (3, 16, 16)
    state = torch.load(run / "last" / "train_state.pt", weights_only=True)
    assert state["step"] == summary["steps"] and state["sampler"]["epoch"] == 2
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", "test_train_tiny", "--checkpoint", str(run / "last"), "--data", "digits",
                 "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert abs(result["top1"] - summary["final_top1"]) < 1e-9 and result["images"] == 360


def test_multi_scale_run_trains_at_every_resolution(tmp_path):
    from mobilevision.tasks.classify import ClassifyTask
    from mobilevision.train import apply_overrides, fit, load_recipe

    recipe = apply_overrides(load_recipe("digits"), ["multi_scale=true", "scales=[12, 16, 20]", "threads=1",
                                                     "input_size=16", "rand_augment=rand-m9-mstd0.5-inc1",
                                                     "cutmix=1.0", "random_erase=0.25", "clip_grad=1.0"],
                             epochs=1, batch_size=16)
    seen = []
    model_forward = TrainTiny.forward

    def spy(self, x):
        if self.training:
            seen.append(tuple(x.shape))
        return model_forward(self, x)

    TrainTiny.forward = spy
    try:
        summary = fit(ClassifyTask("test_train_tiny"), recipe, "digits", tmp_path / "ms")
    finally:
        TrainTiny.forward = model_forward
    sizes = {s[2] for s in seen}
    assert sizes == {12, 16, 20}
    # b_t = 20*20*16 / (H_t*W_t): 44 images at 12 px, 25 at 16 px, 16 at 20 px
    assert {(s[2], s[0]) for s in seen} == {(12, 44), (16, 25), (20, 16)}
    assert summary["steps"] == len(seen) and summary["final_top1"] > 10.0


def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path):
    args = ["train", "--model", "test_train_tiny", "--data", "digits", "--deterministic", *FAST]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    done = _cli([*args, "--output", str(ref)], timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(HERE), *args, "--output", str(cut)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    state_file = cut / "last" / "train_state.pt"
    deadline = time.time() + 90
    while not state_file.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    time.sleep(0.3)  # land somewhere after the first checkpoint, mid-epoch
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "summary.json").exists()
    killed_at = torch.load(state_file, weights_only=True)["step"]
    assert 0 < killed_at < json.loads((ref / "summary.json").read_text())["steps"]

    resumed = _cli([*args, "--output", str(cut), "--resume"], timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr
    assert _metrics(cut) == _metrics(ref)
    s_ref, s_cut = (json.loads((d / "summary.json").read_text()) for d in (ref, cut))
    for key in ("best_top1", "final_top1", "final_ema_top1", "steps", "epochs"):
        assert s_ref[key] == s_cut[key], key
    for sub in ("last", "best"):
        a, b = _weights(ref / sub / "model.safetensors"), _weights(cut / sub / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub


def test_ddp_two_processes_gloo(tmp_path):
    run = tmp_path / "ddp"
    with socket.socket() as sock:  # a free port: a fixed one collides with another run on the same machine
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           str(HERE), "train", "--model", "test_train_tiny", "--data", "digits", "--output", str(run), *FAST]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    # each rank gets 1437/2 samples at batch 32: 22 steps per epoch, half the single-process count
    assert summary["steps"] == 2 * (719 // 32)
    assert summary["final_top1"] > 30.0
    assert len(_metrics(run)) == 2 and done.stdout.count("best top-1") == 1  # only rank 0 reports
    assert "global batch 64, lr 0.02," in done.stderr  # the digits recipe's lr holds at 32 images per step


def _bad_folder(root: Path) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 6), ("val", 3)):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                shade = 40 if cls == "a" else 210
                arr = (torch.rand(20, 20, 3, generator=g) * 40 + shade).to(torch.uint8).numpy()
                Image.fromarray(arr).save(d / f"{i}.png")
    good = root / "train" / "a" / "0.png"
    Image.open(good).save(root / "train" / "a" / "full.jpg", quality=90)
    data = (root / "train" / "a" / "full.jpg").read_bytes()
    (root / "train" / "a" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "train" / "b" / "empty.jpg").write_bytes(b"")
    (root / "train" / "b" / "notes.jpg").write_text("this is not an image\n")
    (root / "train" / "a" / "full.jpg").unlink()


def test_bad_images_are_skipped_and_counted(tmp_path):
    from mobilevision.cli import main

    _bad_folder(tmp_path / "data")
    run = tmp_path / "run"
    code = main(["train", "--model", "test_train_tiny", "--data", str(tmp_path / "data"), "--output", str(run),
                 "--epochs", "1", "--batch-size", "4", "--set", "input_size=16"])
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_images"] == 3 and summary["train_images"] == 12


def test_bad_cli_values_one_line_exit_2(tmp_path, capsys):
    from mobilevision.cli import main

    _bad_folder(tmp_path / "data")
    (tmp_path / "data" / "val" / "c").mkdir()
    (tmp_path / "data" / "val" / "a" / "0.png").rename(tmp_path / "data" / "val" / "c" / "0.png")
    (tmp_path / "empty").mkdir()
    base = ["train", "--model", "test_train_tiny", "--output", str(tmp_path / "o")]
    cases = [
        (["--data", "digits", "--set", "no_such_key=1"], "no_such_key"),
        (["--data", "digits", "--set", "lr=-1"], "lr must be > 0"),
        (["--data", "digits", "--recipe", "nope"], "unknown recipe"),
        (["--data", "digits", "--batch-size", "0"], "batch_size must be >= 1"),
        (["--data", str(tmp_path / "missing")], "not a directory"),
        (["--data", str(tmp_path / "empty")], "train/"),
        (["--data", str(tmp_path / "data")], "classes differ"),
        (["--data", "digits", "--set", "optimizer=adam"], "adamw"),
    ]
    for extra, needle in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (extra, err)
    assert not (tmp_path / "o").exists()


if __name__ == "__main__":
    from mobilevision.cli import main as _main

    sys.exit(_main(sys.argv[1:]))
