"""Reading, remapping and saving weights (the saved format: safetensors + config.json). Nothing here runs
pickled code. Downloads live in `hub.py`."""
from __future__ import annotations

import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilevision.data.config import resolve_data_config

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_NESTED_KEYS = ("state_dict", "model", "model_state", "state_dict_ema", "model_ema", "module")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")


def resolve_weights_path(path: str | os.PathLike) -> Path:
    """A weights file from a file path or a directory holding `model.safetensors` (or one .pth/.bin)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.is_dir():
        if (p / WEIGHTS_NAME).is_file():
            return p / WEIGHTS_NAME
        candidates = sorted(q for q in p.iterdir() if q.suffix in (".safetensors",) + _TORCH_SUFFIXES)
        if len(candidates) != 1:
            raise FileNotFoundError(
                f"checkpoint directory {p} holds no {WEIGHTS_NAME} and {len(candidates)} other weight files; "
                "pass the file itself"
            )
        return candidates[0]
    return p


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` or torch file, unwrapped from `state_dict`/`model`/EMA nesting.

    Torch files load with `weights_only=True`: a file that needs code to unpickle is refused.
    """
    p = resolve_weights_path(path)
    if p.stat().st_size == 0:
        raise ValueError(f"checkpoint {p} is empty (0 bytes); re-download or re-save it")
    if p.suffix == ".onnx":
        raise ValueError(f"{p} is an ONNX graph, not PyTorch weights: run it with onnxruntime "
                         "(`mobilevision predict` / `eval` take it as --checkpoint) or pass the weights it was "
                         "exported from")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(p))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"checkpoint {p} is not a readable safetensors file: {err}") from None
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else "unpickling failed"
            raise ValueError(
                f"refused to load {p}: it is not a plain tensor checkpoint and loading it would run code "
                f"({first[:160]}). Re-save it as a state dict (safetensors preferred)."
            ) from None
        except (RuntimeError, EOFError, OSError) as err:
            raise ValueError(f"checkpoint {p} is not a readable torch file: {str(err)[:200]}") from None
    return unwrap_state_dict(state, source=str(p))


def unwrap_state_dict(state: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensor dict inside common training-checkpoint nestings and strip DDP's `module.`."""
    for _ in range(3):
        if isinstance(state, dict) and not _is_tensor_dict(state):
            inner = next((state[k] for k in _NESTED_KEYS if isinstance(state.get(k), dict)), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, dict) or not _is_tensor_dict(state):
        raise ValueError(f"{source} holds no state dict of tensors (looked under {', '.join(_NESTED_KEYS)})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _is_tensor_dict(d: dict) -> bool:
    return len(d) > 0 and all(isinstance(v, torch.Tensor) for v in d.values())


def rename_prefix(key: str, table: dict[str, str], into: str = "") -> str | None:
    """`into` + `key` with the first `table` prefix it starts with (whole dotted parts) renamed; None if none."""
    for old, new in table.items():
        if key == old or key.startswith(old + "."):
            return into + new + key[len(old):]
    return None


def classifier_keys(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Keys of `state_dict` that belong to the model's final classifier."""
    get = getattr(model, "get_classifier", None)
    try:
        head = get() if get is not None else None
    except AttributeError:  # the classifier was removed (a features-only backbone whose head is Identity)
        head = None
    if head is None:
        return []
    prefixes = [name + "." for name, mod in model.named_modules() if mod is head and name]
    return [k for k in state_dict if any(k.startswith(p) for p in prefixes)]


def load_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True,
                    new_head: bool = False) -> nn.Module:
    """Load our own, timm's or the official layout of this model's weights into `model` (in place).

    The model's family filter (set by `create_model`) detects a foreign layout from the keys and remaps
    it. A checkpoint whose classifier has another number of classes than the model is a ValueError unless
    `new_head=True` (fine-tuning: the classifier keeps its initialisation, with a warning). A mismatch
    elsewhere raises ValueError that lists the first offending keys.
    """
    state = read_state_dict(path)
    return load_state_dict_into(model, state, source=str(path), strict=strict, new_head=new_head)


def load_state_dict_into(model: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict",
                         strict: bool = True, new_head: bool = False) -> nn.Module:
    """Remap `state` with the model's checkpoint filter and load it, with readable errors (see load_checkpoint)."""
    target = model.model if hasattr(model, "out_indices") and hasattr(model, "model") else model
    filt = getattr(target, "checkpoint_filter", None)
    if filt is not None:
        state = filt(state, target)
    own = target.state_dict()
    head = set(classifier_keys(target, own))
    # another class count (not another width: that is a wrong model, reported below with the other shapes)
    head_mismatch = sorted(k for k in head if k in state and state[k].ndim and own[k].ndim
                           and state[k].shape[0] != own[k].shape[0])
    if head_mismatch and not new_head:
        k = head_mismatch[0]
        saved_n, model_n = int(state[k].shape[0]), int(own[k].shape[0])
        raise ValueError(
            f"checkpoint {source} has a {saved_n}-class classifier but the model was built with {model_n} "
            f"classes; pass num_classes={saved_n} (CLI: --num-classes {saved_n}) to use the trained head, or "
            f"num_classes=N explicitly for a new N-class head"
        )
    if head_mismatch:
        warnings.warn(f"{source}: classifier shape {tuple(state[head_mismatch[0]].shape)} differs from the model's "
                      f"{tuple(own[head_mismatch[0]].shape)}; the classifier keeps its fresh initialisation",
                      stacklevel=3)
    own_check = list(own)
    if head_mismatch or not any(k in state for k in head):  # the classifier keeps its initialisation
        state = {k: v for k, v in state.items() if k not in head}
        own_check = [k for k in own if k not in head]
    missing = [k for k in own_check if k not in state]
    unexpected = [k for k in state if k not in own]
    shape_bad = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in own_check if k in state and state[k].shape != own[k].shape]
    parts = [f"{len(shape_bad)} shape mismatches, first: " + "; ".join(shape_bad[:3])] if shape_bad else []
    if strict:
        parts += [f"{len(keys)} {what} keys, first: " + ", ".join(keys[:5])
                  for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    if parts:
        name = getattr(target, "model_name", type(target).__name__)
        raise ValueError(
            f"checkpoint {source} does not fit model {name}: " + " | ".join(parts)
            + ". Check that the model name (and num_classes / in_chans) match the checkpoint."
        )
    state = {k: (v.to(own[k].dtype) if k in own and v.is_floating_point() else v) for k, v in state.items()}
    target.load_state_dict(state, strict=False)
    return model


def file_mode() -> int:
    """The mode a plain `open(path, "w")` would give a new file: 0o666 less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, write_fn) -> None:
    """Write through a temporary file in the same directory, fsync, then rename over `path`.

    `write_fn(tmp_path)` writes the content. The file gets the umask's usual mode (mkstemp's would be 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write_bytes` of a text file (`~` expanded, its folder made); returns the path."""
    path = Path(path).expanduser()
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text))
    return path


def save_pretrained(model: nn.Module, directory: str | os.PathLike, labels: list[str] | None = None,
                    extra: dict | None = None) -> Path:
    """Write `model.safetensors` and `config.json` so `create_model(name, checkpoint_path=dir)` restores it."""
    from safetensors.torch import save_file

    target = model.model if hasattr(model, "out_indices") and hasattr(model, "model") else model
    d = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in target.state_dict().items()}
    atomic_write_bytes(d / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    config = {
        "model": getattr(target, "model_name", None),
        "num_classes": getattr(target, "num_classes", None),
        "in_chans": getattr(target, "in_chans", 3),
        "overrides": getattr(target, "creation_overrides", {}),
        "data_config": resolve_data_config(target).to_dict(),
        "labels": labels,
        **(extra or {}),
    }
    text = json.dumps(config, indent=2)
    atomic_write_text(d / CONFIG_NAME, text)
    return d


def read_config(path: str | os.PathLike) -> dict | None:
    """The `config.json` beside (or inside) a checkpoint path, if there is one."""
    p = Path(path).expanduser()
    cfg_path = p / CONFIG_NAME if p.is_dir() else p.parent / CONFIG_NAME
    if not cfg_path.is_file():
        return None
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg_path} is not valid JSON: {err}") from None


# the download helpers are importable from here too
from .hub import cache_dir, download_hf, download_url, sha256_of  # noqa: E402,F401
