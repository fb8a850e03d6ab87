import subprocess
import sys

from mobilevision.cli import main


def test_unknown_model_one_line_exit_2(capsys):
    assert main(["info", "mobilenetv3_largee_100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model" in err[0]


def test_bad_flag_exit_2(capsys):
    assert main(["models", "--no-such-flag"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "mobilevision", "models", "zzz_none*"], capture_output=True, text=True)
    assert out.returncode == 2 and "no model matches" in out.stderr
