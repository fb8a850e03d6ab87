"""What the one training loop (`train.engine.fit`) needs from a task.

A task is a small object: it builds the model and the data sets, computes the loss of a batch, evaluates,
and saves what it exports. Classification, FCMAE pre-training, detection and segmentation are tasks.

The engine owns everything else: seeding, threads, AMP, DDP, accumulation, clipping, the schedule, EMA,
checkpoints, resume and the logs. It calls, in order:

    task = TaskClass(model_name, recipe.task_options)     # options checked by `check_options`
    data = task.build_data(data, recipe)                  # once, on every rank
    model = task.build_model(recipe, data)                # after torch.manual_seed(recipe.seed)
    per batch:  task.train_step(train_model, batch, device)   # the engine back-propagates its "loss"
    per epoch:  task.evaluate(model, val_loader, device)  # and on the EMA copy; under autocast
                task.save(model, run/"last" (and run/"best" when `metric` improves), extra)
                task.on_epoch_end(model, epoch, run)      # rank 0 only; optional

Batches: the engine draws `(height, width, index, seed)` items with the multi-scale sampler
(`data.VariableBatchSampler`). A train dataset whose `takes_size` attribute is true receives those tuples
(and applies the size itself, see `data.TrainView`); any other map-style dataset receives `index`, with torch,
numpy and `random` seeded from the item's seed while it loads, so augmentation is reproducible either way.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn


@dataclass
class TaskData:
    """The data sets of a run.

    `train` / `val` are map-style datasets; `collate` batches their items (None = torch's default);
    `skipped` counts what was dropped while opening the data (reason -> count), written to summary.json;
    `info` holds what the model needs to know (e.g. `num_classes`, `labels`); its int / float / str values
    are copied into summary.json. `sizes` are the training resolutions the sampler draws from (one = a fixed
    size; None = the dataset takes no size) and `base_size` the one at which `recipe.batch_size` holds.
    """

    train: Any
    val: Any | None
    collate: Callable | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    sizes: list[int] | None = None
    base_size: int | None = None


class Task:
    """Base of every task; the engine calls these methods and nothing else task-specific.

    `name` is the task's CLI name (`--task NAME`, the recipe's `task:`); `metric` names the key of
    `evaluate`'s result that picks `best/` (higher is better; "" = no best/). `Options` is an optional
    dataclass of the task's recipe options (`task_options:` in YAML, `--set task_options.KEY=VALUE`).
    """

    name: str = ""
    metric: str = ""
    Options: type | None = None

    def __init__(self, model_name: str, options: dict[str, Any] | None = None) -> None:
        self.model_name = model_name
        checked = self.check_options(options or {})
        self.options = self.Options(**checked) if self.Options is not None else None

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The options with defaults filled in; ValueError naming an unknown key or a bad value."""
        if not isinstance(options, dict):
            raise ValueError(f"task_options must be a mapping, got {type(options).__name__}")
        if cls.Options is None:
            if options:
                raise ValueError(f"task {cls.name!r} takes no task_options, got {sorted(options)}")
            return {}
        names = [f.name for f in dataclasses.fields(cls.Options)]
        for key in options:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else f"; known: {', '.join(names)}"
                raise ValueError(f"unknown task_options key {key!r} for task {cls.name!r}{hint}")
        from mobilevision.train.recipe import check_types

        opts = cls.Options(**options)
        check_types(opts, "task_options field")
        check = getattr(opts, "validate", None)
        if callable(check):
            check()
        return dataclasses.asdict(opts)

    def build_data(self, data: str, recipe: Any) -> TaskData:
        """Open `data` (a built-in set's name or a path) for this task."""
        raise NotImplementedError

    def build_model(self, recipe: Any, data: TaskData) -> nn.Module:
        """The model to train, in train form."""
        raise NotImplementedError

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        """Forward + loss for one batch: a dict with the scalar `loss` to back-propagate and any other
        scalar terms to log."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        """Metrics over the whole val loader (reduced over DDP ranks); must contain `self.metric`."""
        raise NotImplementedError

    def save(self, model: nn.Module, directory: Path, extra: dict[str, Any]) -> None:
        """Write the model's exportable form (safetensors + config.json) to `directory`."""
        raise NotImplementedError

    def save_with_info(self, model: nn.Module, directory: Path, extra: dict[str, Any], labels: list[str] | None = None,
                       **info: Any) -> None:
        """`save_pretrained` of the (DDP-unwrapped) model with its `labels` (else `model.labels`); config.json's
        extra gets `task` (this task's name unless `extra` has one), `extra` and the `info` that is not None."""
        from mobilevision.models.checkpoint import save_pretrained

        target = getattr(model, "module", model)
        meta = {"task": self.name, **(extra or {}), **{k: v for k, v in info.items() if v is not None}}
        save_pretrained(target, directory, labels=getattr(target, "labels", None) or labels or None, extra=meta)

    def on_epoch_end(self, model: nn.Module, epoch: int, output: Path) -> None:
        """Optional: rank 0's extra output after epoch `epoch` (1-based), e.g. sample images."""


def backbone_classifier(model: nn.Module) -> nn.Module:
    """The zoo classifier inside a task model's `backbone` (through feature-extractor wrappers)."""
    part = getattr(model, "backbone", None)
    while part is not None and not hasattr(part, "forward_stages"):
        part = getattr(part, "model", None)
    if part is None:
        raise ValueError(f"{type(model).__name__} has no zoo backbone to initialise")
    return part


BACKBONE_PREFIX = "backbone.model."  # where every task model (detector, segmenter) keeps its zoo classifier


def init_backbone(model: nn.Module, path: str | Path) -> str:
    """Load a classifier checkpoint (file or run directory; ours, timm's or the official layout) of the task
    model's backbone into it, in place; the classifier-only layers the backbone dropped are ignored. A task
    model's checkpoint (e.g. a detector trained on the same backbone) gives its backbone's weights.
    Returns a log line; ValueError when the checkpoint is of another model or nothing fits."""
    from mobilevision.models.checkpoint import load_state_dict_into, read_config, read_state_dict

    body = backbone_classifier(model)
    name = getattr(body, "model_name", None) or type(body).__name__
    saved = (read_config(path) or {}).get("model")
    state = read_state_dict(path)
    task_backbone = {k[len(BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    if task_backbone:  # a task model's run: its backbone must be this one (checked by name and by shape below)
        inner = _task_backbone_name(saved)
        if inner and inner != name:
            raise ValueError(f"init_backbone {path}: {saved!r} is built on {inner!r}, but this model's backbone "
                             f"is {name!r}")
        state, saved = task_backbone, f"the backbone of {saved or 'a task model'}"
    elif saved and saved != name:
        raise ValueError(f"init_backbone {path}: a checkpoint of {saved!r}, but this model's backbone is {name!r}")
    remap = getattr(body, "checkpoint_filter", None)
    if remap is not None:  # timm's / the official layout -> ours (load_state_dict_into passes ours through)
        state = remap(state, body)
    own = body.state_dict()
    fits = [k for k in state if k in own]
    if not fits:
        raise ValueError(f"init_backbone {path}: no tensor of the checkpoint fits backbone {name}")
    # other shapes (e.g. a classifier built without the backbone's reduced_tail) are a ValueError naming them
    load_state_dict_into(body, state, source=str(path), strict=False, new_head=True)
    origin = f" ({saved})" if saved and saved.startswith("the backbone of") else ""
    return f"backbone {name} initialised from {path}{origin}: {len(fits)} of {len(own)} tensors"


def _task_backbone_name(model_name: str | None) -> str | None:
    """The zoo classifier a registered task model is built on (None when it cannot be told without building)."""
    from mobilevision.models.factory import create_model
    from mobilevision.models.registry import list_models

    if not model_name or model_name not in list_models():
        return None
    with torch.device("meta"):
        return getattr(backbone_classifier(create_model(model_name)), "model_name", None)
