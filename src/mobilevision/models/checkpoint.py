"""Reading, remapping, saving and downloading weights. Nothing here runs pickled code."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
    out = {}
    for k, v in state.items():
        if isinstance(v, torch.Tensor):
            out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def _is_tensor_dict(d: dict) -> bool:
    return len(d) > 0 and all(isinstance(v, torch.Tensor) for v in d.values())


def classifier_keys(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Keys of `state_dict` that belong to the model's final classifier."""
    get = getattr(model, "get_classifier", None)
    head = get() if get is not None else None
    if head is None:
        return []
    prefixes = [name + "." for name, mod in model.named_modules() if mod is head and name]
    return [k for k in state_dict if any(k.startswith(p) for p in prefixes)]


def load_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load our own, timm's or the official layout of this model's weights into `model` (in place).

    The model's family filter (set by `create_model`) detects a foreign layout from the keys and remaps
    it. If the checkpoint's classifier has another number of classes than the model, the classifier is
    left at its initialisation (fine-tuning) with a warning. A mismatch elsewhere raises ValueError that
    lists the first offending keys.
    """
    state = read_state_dict(path)
    return load_state_dict_into(model, state, source=str(path), strict=strict)


def load_state_dict_into(model: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict",
                         strict: bool = True) -> nn.Module:
    """Remap `state` with the model's checkpoint filter and load it, with readable errors."""
    target = model.model if hasattr(model, "out_indices") and hasattr(model, "model") else model
    filt = getattr(target, "checkpoint_filter", None)
    if filt is not None:
        state = filt(state, target)
    own = target.state_dict()
    head = set(classifier_keys(target, own))
    head_mismatch = [k for k in head if k in state and state[k].shape != own[k].shape]
    if head_mismatch or (head and not any(k in state for k in head)):
        if head_mismatch:
            warnings.warn(
                f"{source}: classifier shape {tuple(state[head_mismatch[0]].shape)} differs from the model's "
                f"{tuple(own[head_mismatch[0]].shape)}; the classifier keeps its fresh initialisation",
                stacklevel=3,
            )
        state = {k: v for k, v in state.items() if k not in head}
        own_check = {k: v for k, v in own.items() if k not in head}
    else:
        own_check = own
    missing = [k for k in own_check if k not in state]
    unexpected = [k for k in state if k not in own]
    shape_bad = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own_check if k in state and state[k].shape != own[k].shape
    ]
    if shape_bad or (strict and (missing or unexpected)):
        parts = []
        if shape_bad:
            parts.append(f"{len(shape_bad)} shape mismatches, first: " + "; ".join(shape_bad[:3]))
        if strict and missing:
            parts.append(f"{len(missing)} missing keys, first: " + ", ".join(missing[:5]))
        if strict and unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, first: " + ", ".join(unexpected[:5]))
        name = getattr(target, "model_name", type(target).__name__)
        raise ValueError(
            f"checkpoint {source} does not fit model {name}: " + " | ".join(parts)
            + ". Check that the model name (and num_classes / in_chans) match the checkpoint."
        )
    own_dtype = {k: v.dtype for k, v in own.items()}
    state = {k: (v.to(own_dtype[k]) if k in own_dtype and v.is_floating_point() else v) for k, v in state.items()}
    target.load_state_dict(state, strict=False)
    return model


def atomic_write_bytes(path: Path, write_fn) -> None:
    """Write through a temporary file in the same directory, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
        "default_cfg": _jsonable(getattr(target, "default_cfg", {})),
        "labels": labels,
    }
    if extra:
        config.update(extra)
    text = json.dumps(config, indent=2)
    atomic_write_bytes(d / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def cache_dir() -> Path:
    """Where downloaded weights live: $MOBILEVISION_CACHE or ~/.cache/mobilevision."""
    return Path(os.environ.get("MOBILEVISION_CACHE", Path.home() / ".cache" / "mobilevision"))


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_url(url: str, sha256: str | None, filename: str | None = None) -> Path:
    """Fetch `url` into the cache (once), verifying its sha256; `file://` URLs work too."""
    name = filename or url.rstrip("/").split("/")[-1]
    dest = cache_dir() / "url" / name
    if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=dest.parent)
    os.close(fd)
    try:
        try:
            with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as out:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as err:
            raise RuntimeError(
                f"could not download {url} ({getattr(err, 'reason', err)}). Without network access, download "
                "the file elsewhere and pass it with checkpoint_path=PATH (CLI: --checkpoint PATH)."
            ) from None
        if sha256 is not None:
            got = sha256_of(tmp)
            if got != sha256:
                raise ValueError(f"sha256 of {url} is {got}, expected {sha256}: the download is corrupt or altered")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def download_hf(repo_id: str, filename: str = WEIGHTS_NAME) -> Path:
    """Fetch a file from the Hugging Face Hub (cached by huggingface_hub)."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, filename))
    except Exception as err:  # the hub raises many connection error types
        raise RuntimeError(
            f"could not fetch {filename} from the Hugging Face Hub repo {repo_id} ({type(err).__name__}). "
            "Without network access, download it elsewhere and pass checkpoint_path=PATH (CLI: --checkpoint PATH)."
        ) from None
