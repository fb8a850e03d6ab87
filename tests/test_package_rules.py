"""Project rules that code review alone would miss."""
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mobilevision"


def test_timm_only_in_data_and_train():
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(("data/", "train/")):
            continue
        if re.search(r"^\s*(import timm|from timm)", path.read_text(), re.M):
            offenders.append(rel)
    assert not offenders, f"timm imported outside data/ and train/: {offenders}"


def test_torch_load_always_weights_only():
    offenders = []
    for path in SRC.rglob("*.py"):
        for line in path.read_text().splitlines():
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(SRC)}: {line.strip()}")
    assert not offenders, offenders


def test_import_and_help_load_no_torch():
    """`import mobilevision` and `mobilevision --help` / `choose --help` stay quick: torch loads on first use."""
    import os
    import subprocess
    import sys

    code = ("import sys, mobilevision; from mobilevision.cli import main\n"
            "for argv in ([], ['--help'], ['choose', '--help'], ['train', '--help'], ['--version']): main(argv)\n"
            "print('HEAVY', sorted(m for m in ('torch', 'torchvision', 'scipy', 'numpy') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout and "choose" in out.stdout and "--budget-ms" in out.stdout, out.stdout[-500:]


def test_lazy_public_names_are_the_defining_modules_objects():
    import importlib

    import mobilevision
    from mobilevision import deploy, train

    for pkg in (mobilevision, deploy, train):
        assert set(pkg.__all__) <= set(dir(pkg)), pkg.__name__
        for name, module in pkg._LAZY.items():
            assert getattr(pkg, name) is getattr(importlib.import_module(module, pkg.__name__), name), name
    assert mobilevision.deploy is deploy and mobilevision.models.registry.list_models is mobilevision.list_models
    with pytest.raises(AttributeError, match="no attribute 'zzz'"):
        mobilevision.zzz


def test_benchmark_scripts_import_what_exists():
    """Every `from mobilevision... import name` / `from <sibling benchmark> import name` in benchmarks/ names
    something that exists (a benchmark is not run in CI, so a renamed helper would break it unseen)."""
    import ast
    import importlib
    import importlib.util
    import sys

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    siblings = {f.stem for f in bench.glob("*.py")}
    missing = []
    sys.path.insert(0, str(bench))
    try:
        for f in sorted(bench.glob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                    continue
                if node.module.split(".")[0] not in {"mobilevision", *siblings}:
                    continue
                mod = importlib.import_module(node.module)
                missing += [f"{f.name}: {node.module}.{a.name}" for a in node.names if not hasattr(mod, a.name)
                            and not (hasattr(mod, "__path__")  # a submodule of a package
                                     and importlib.util.find_spec(f"{node.module}.{a.name}"))]
    finally:
        sys.path.remove(str(bench))
    assert not missing, missing
