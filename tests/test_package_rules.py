"""Project rules that code review alone would miss."""
import re
from pathlib import Path

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
