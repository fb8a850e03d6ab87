"""Run state: `last/train_state.pt` holds everything a resume needs (the weights in `last/` and `best/` are
the task's `save`, safetensors + config.json loadable with `create_model(name, checkpoint_path=dir)`),
as plain tensors and containers (loaded with weights_only=True). Every file is written atomically."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..models.checkpoint import atomic_write_bytes

STATE_NAME = "train_state.pt"


def rng_state() -> dict:
    """torch / CUDA / numpy / random generator states as plain data."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "random": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(directory: Path, state: dict) -> None:
    atomic_write_bytes(Path(directory) / STATE_NAME, lambda tmp: torch.save(state, tmp))


def load_train_state(directory: Path) -> dict:
    path = Path(directory) / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no resumable state at {path}; was the run started with this --output?")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"cannot read training state {path}: {str(err).splitlines()[0][:200]}") from None

