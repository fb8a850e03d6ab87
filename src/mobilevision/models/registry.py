"""Model registry: every variant's builder, data config, weight sources and published figures."""
from __future__ import annotations

import csv
import difflib
import fnmatch
import importlib
import pkgutil
import re
from dataclasses import dataclass, field, asdict
from importlib import resources
from typing import Any, Callable

from mobilevision.data.config import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD, DataConfig


@dataclass(frozen=True)
class WeightSource:
    """Where `pretrained=True` fetches weights from.

    `hf_hub_id` names a Hugging Face Hub repo holding `model.safetensors` (timm's layout);
    `url` + `sha256` name an official release file. `note` explains models without public weights.
    """

    hf_hub_id: str | None = None
    url: str | None = None
    sha256: str | None = None
    filename: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """A registered variant: how to build it and how to feed it."""

    name: str
    family: str
    builder: Callable[..., Any]
    kwargs: dict = field(default_factory=dict)
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    num_classes: int = 1000  # the head's default class count (task presets: COCO's 91, VOC's 21, ...)
    weights: WeightSource = WeightSource()
    # Remaps a foreign (timm / official) state dict into this library's key layout.
    checkpoint_filter: Callable[[dict, Any], dict] | None = None

    def data_config(self) -> DataConfig:
        """The preprocessing a user needs: input size (C, H, W), mean, std, crop_pct, interpolation."""
        return DataConfig(self.input_size, self.mean, self.std, self.crop_pct, self.interpolation)


_REGISTRY: dict[str, ModelConfig] = {}
_FAMILIES_IMPORTED = False


def register_model(cfg: ModelConfig) -> ModelConfig:
    """Add a variant to the registry; names are unique."""
    if cfg.name in _REGISTRY:
        raise ValueError(f"model {cfg.name!r} is registered twice")
    _REGISTRY[cfg.name] = cfg
    return cfg


def register_variants(family: str, builder: Callable[..., Any], variants: dict[str, dict], **shared: Any) -> None:
    """Register a family's variant table, one `ModelConfig` per entry.

    `variants` maps each name to its fields: `kwargs` (the builder's arguments) and any other ModelConfig
    field that differs from `shared` (e.g. `weights`, `input_size`, `crop_pct`, or `family` for a sub-family).
    """
    for name, fields in variants.items():
        register_model(ModelConfig(name, fields.get("family", family), builder,
                                   **{**shared, **{k: v for k, v in fields.items() if k != "family"}}))


def _import_families() -> None:
    """Import every module in `mobilevision.models` so their variants register themselves."""
    global _FAMILIES_IMPORTED
    if _FAMILIES_IMPORTED:
        return
    _FAMILIES_IMPORTED = True
    import mobilevision.models as models_pkg

    for info in pkgutil.iter_modules(models_pkg.__path__):
        importlib.import_module(f"mobilevision.models.{info.name}")


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob pattern (case-insensitive), sorted."""
    _import_families()
    pattern = pattern.lower()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_config(name: str) -> ModelConfig:
    """The registered config of `name`; an unknown name raises ValueError with the closest names."""
    _import_families()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(
            f"unknown model {name!r}{hint}. Run `mobilevision models` to list all {len(_REGISTRY)} models."
        )
    return _REGISTRY[name]


_TOP1 = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:%|/)")
_PUBLISHED: dict[str, dict] | None = None


def parse_top1(paper: str) -> float:
    """The paper's ImageNet top-1 (percent) from a `paper` cell such as "70.6% / 569M / 4.2M"; where the cell
    gives two figures ("76.3/77.1% / ...", paper / later re-training) the first, the paper's own."""
    m = _TOP1.match(paper)
    if m is None:
        raise ValueError(f"published.csv paper cell {paper!r} does not start with a top-1 such as '70.6%'")
    return float(m.group(1))


def published_figures() -> dict[str, dict]:
    """Rows of the shipped `published.csv` keyed by model name (numbers parsed, `top1` in percent), read once."""
    global _PUBLISHED
    if _PUBLISHED is None:
        rows = {}
        with resources.files("mobilevision.models").joinpath("published.csv").open() as f:
            for row in csv.DictReader(f):
                for key in ("params_m", "gmacs", "params_tol_pct", "gmacs_tol_pct"):
                    row[key] = float(row[key])
                row["input_size"] = int(row["input_size"])
                row["top1"] = parse_top1(row["paper"])
                rows[row["model"]] = row
        _PUBLISHED = rows
    return {k: dict(v) for k, v in _PUBLISHED.items()}


def model_info(name: str) -> dict:
    """Config and published figures of a model, as plain data."""
    cfg = get_config(name)
    info = {
        "name": cfg.name,
        "family": cfg.family,
        "arch": {k: _plain(v) for k, v in cfg.kwargs.items()},
        **asdict(cfg.data_config()),
        "weights": asdict(cfg.weights),
    }
    pub = published_figures().get(name)
    if pub is not None:
        info["top1"] = pub["top1"]  # ImageNet-1k top-1 (%) the paper reports
        info["published"] = {k: pub[k] for k in ("params_m", "gmacs", "paper", "top1", "source")}
        info["published"]["parity_with"] = pub["parity_with"] or None
    return info


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return repr(value)
