"""What the one training loop (`train.engine.fit`) needs from a task.

A task is a small object: it builds the model and the data sets, computes the loss of a batch, evaluates,
and saves what it exports. Classification, FCMAE pre-training, detection and segmentation are tasks.
"""
from __future__ import annotations

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
    `info` holds what the model needs to know (e.g. `num_classes`, `labels`).
    """

    train: Any
    val: Any | None
    collate: Callable | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class Task:
    """Base of every task; the engine calls these methods and nothing else task-specific.

    `name` is the task's CLI name (`--task NAME`); `metric` names the key of `evaluate`'s result that
    picks `best/` (higher is better).
    """

    name: str = ""
    metric: str = ""

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
