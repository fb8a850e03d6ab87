import argparse
import subprocess
import sys

import pytest

from mobilevision.cli import COMMANDS, build_parser, main, parse_args

# the one dialect: canonical flag first, then its aliases
SPELLINGS = {
    "model": ["--model"],
    "output": ["--output", "--out"],
    "batch_size": ["--batch-size", "--batch"],
    "input_size": ["--input-size", "--size"],
}
# which shared arguments each command takes (a command without the concept has no such flag)
TAKES = {
    "models": set(),
    "info": {"model"},
    "profile": {"model", "input_size"},
    "bench": {"model", "output", "batch_size", "input_size"},
    "export": {"model", "output", "input_size"},
    "quantize": {"output"},
    "predict": {"model", "output", "batch_size", "input_size"},
    "eval": {"model", "output", "batch_size", "input_size"},
    "train": {"model", "output", "batch_size", "input_size"},
    "pretrain": {"model", "output", "batch_size", "input_size"},
    "choose": {"output", "batch_size", "input_size"},
    "lut": {"input_size"},
    "search": {"output", "input_size"},
    "explain": set(),  # its shared arguments are on attention / collapse / activations (test_explain_cli.py)
}
# the minimum each command needs besides the shared arguments
REQUIRED = {
    "models": [], "info": [], "profile": [], "bench": [], "export": [],
    "quantize": ["m.onnx", "--calibration", "digits"],
    "predict": ["--checkpoint", "ck", "img.png"],
    "eval": ["--checkpoint", "ck", "--data", "digits"],
    "train": ["--data", "digits"], "pretrain": ["--data", "digits"], "explain": [],
    "choose": ["--budget-ms", "8"], "lut": ["predict"], "search": ["--budget-ms", "8"],
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flags(p: argparse.ArgumentParser) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a in p._actions:
        dest = "model" if a.dest == "model_opt" else a.dest
        if dest in SPELLINGS and a.option_strings:
            out[dest] = list(a.option_strings)
    return out


def test_every_command_is_covered():
    assert set(_subparsers()) == set(COMMANDS) == set(TAKES)


@pytest.mark.parametrize("command", sorted(TAKES))
def test_one_dialect_over_all_subcommands(command, tmp_path):
    p = _subparsers()[command]
    flags = _flags(p)
    assert set(flags) == TAKES[command], f"{command}: takes {sorted(flags)}"
    for dest, spellings in flags.items():
        assert spellings == SPELLINGS[dest], f"{command} {dest}: {spellings}"
    base = [command, *REQUIRED[command]]
    for dest in TAKES[command]:
        for flag in SPELLINGS[dest]:
            if dest == "model":
                cases = [([flag, "test_x"], "test_x")]
            elif dest == "output":
                cases = [([flag, str(tmp_path / "o.onnx")], str(tmp_path / "o.onnx"))]
            elif dest == "batch_size":
                cases = [([flag, "4"], "4" if command == "bench" else 4)]
            else:  # N, H W and H,W all mean the same size; bench keeps a list (a sweep)
                want = [(224, 224)] if command == "bench" else (224, 224)
                cases = [([flag, "224"], want), ([flag, "224", "224"], want), ([flag, "224,224"], want)]
            fill = {"model": ["--model", "test_x"], "output": ["--output", str(tmp_path / "o.onnx")]}
            others = [v for k in TAKES[command] & set(fill) - {dest} for v in fill[k]]
            for extra, want in cases:
                args = parse_args(base + others + extra)
                got = getattr(args, dest)
                if dest == "model" and command == "bench":
                    got = got[0]
                assert got == want, (command, extra, got)
    if "model" in TAKES[command] and command != "predict":  # positional NAME too
        out = ["--output", str(tmp_path / "o.onnx")] if "output" in TAKES[command] else []
        args = parse_args([command, "test_x", *REQUIRED[command], *out])
        assert (args.model[0] if command == "bench" else args.model) == "test_x"


def test_predict_model_positional_or_flag():
    a = parse_args(["predict", "test_deploynet", "a.png", "b.png", "--checkpoint", "ck"])
    b = parse_args(["predict", "a.png", "b.png", "--model", "test_deploynet", "--checkpoint", "ck"])
    c = parse_args(["predict", "a.png", "--checkpoint", "m.onnx"])  # a graph names its own model
    assert (a.model, a.images) == (b.model, b.images) == ("test_deploynet", ["a.png", "b.png"])
    assert (c.model, c.images) == (None, ["a.png"])


@pytest.mark.parametrize("argv, needle", [
    (["profile", "mobilenetv3_small_100", "--size", "1", "2", "3"], "--input-size takes"),
    (["profile", "mobilenetv3_small_100", "--size", "a"], "--input-size takes"),
    (["info", "a", "--model", "b"], "two different models"),
    (["info"], "give a model"),
    (["train", "--data", "digits", "--input-size", "16", "24", "--model", "mobilenetv3_small_100"], "square"),
])
def test_dialect_misuse_is_one_line(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_output_naming_an_existing_file_is_one_line(capsys, tmp_path):
    """Issue 12 bug 6: a run directory that is an existing file was a traceback (exit 1)."""
    (tmp_path / "taken").write_text("x")
    for argv in (["train", "--model", "mobilenetv3_small_100", "--data", "digits"],
                 ["bench", "mobilenetv3_small_100"]):
        assert main(argv + ["--output", str(tmp_path / "taken")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is an existing file" in err[0], err
    assert main(["eval", "--checkpoint", "ck", "--data", "digits", "--output", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_unknown_model_one_line_exit_2(capsys):
    assert main(["info", "mobilenetv3_largee_100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model" in err[0]


def test_bad_flag_exit_2(capsys):
    assert main(["models", "--no-such-flag"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_parser_errors_do_not_patch_argparse():
    before = argparse.ArgumentParser.error
    main(["models", "--no-such-flag"])
    assert argparse.ArgumentParser.error is before
    with pytest.raises(SystemExit):  # a plain parser elsewhere in the process still exits as argparse does
        argparse.ArgumentParser(prog="other").parse_args(["--zzz"])


def test_version_and_train_help(capsys):
    import mobilevision
    from mobilevision.train.recipe import recipe_names

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mobilevision {mobilevision.__version__}"
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in recipe_names()) and "--set keys" in out and "ema_decay" in out


def test_models_lists_without_building_unless_counted(capsys, monkeypatch):
    """`mobilevision models` took 36 s recounting every model; it now counts only with --count."""
    import mobilevision.deploy.profiling as profiling

    monkeypatch.setattr(profiling, "count_on_meta", lambda *a, **k: pytest.fail("counted without --count"))
    assert main(["models", "mobilenetv3_small_*", "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert rows and rows[0]["params_m"] is None and rows[0]["published_params_m"] is not None
    monkeypatch.undo()
    assert main(["models", "mobilenetv3_small_100", "--count", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert abs(row["params_m"] - 2.543) < 0.01


def test_warnings_are_one_line(capsys):
    import warnings

    from mobilevision.cli import _one_line_warning

    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        warnings.warn("first line\nsecond line", UserWarning)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mobilevision: warning: first line"]


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "mobilevision", "models", "zzz_none*"], capture_output=True, text=True)
    assert out.returncode == 2 and "no model matches" in out.stderr
    out = subprocess.run([sys.executable, "-m", "mobilevision", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "predict" in out.stdout and not out.stderr


@pytest.mark.parametrize("command, policy", [("train", "PASSIVE"), ("pretrain", "PASSIVE"), ("choose", None),
                                             ("bench", None)])
def test_only_training_commands_make_openmp_waits_sleep(command, policy):
    """Training sets OMP_WAIT_POLICY=PASSIVE before torch loads (spinning threads collapse it on a shared
    machine); inference commands keep OpenMP's default (passive waits slow batch-1 calls at 2 threads)."""
    import os
    import subprocess
    import sys

    code = ("import os, sys; from mobilevision.cli import main; main([sys.argv[1], '--help']); "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code, command], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == str(policy)
