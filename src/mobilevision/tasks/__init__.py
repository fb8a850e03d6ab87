"""Tasks for the one training loop: classify, fcmae, detect and segment.

`TASKS` maps a task name to "module:Class"; classes load on first use so that importing the package
stays cheap. `register_task` adds one (a plug-in or a test).
"""
from __future__ import annotations

import importlib
from typing import Any

from .base import Task, TaskData

TASKS: dict[str, str] = {
    "classify": "mobilevision.tasks.classify:ClassifyTask",
    "fcmae": "mobilevision.tasks.fcmae:FCMAETask",
    "detect": "mobilevision.tasks.detect.task:DetectTask",
    "segment": "mobilevision.tasks.segment.task:SegmentTask",
}


def register_task(cls: type[Task]) -> type[Task]:
    """Make `cls` available as recipe `task: cls.name`."""
    TASKS[cls.name] = cls  # type: ignore[assignment]
    return cls


def task_class(name: str) -> type[Task]:
    """The Task class registered as `name`; ValueError listing the known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    entry: Any = TASKS[name]
    if isinstance(entry, str):
        module, attr = entry.split(":")
        entry = getattr(importlib.import_module(module), attr)
    return entry


def create_task(name: str, model_name: str, options: dict | None = None) -> Task:
    """`task_class(name)(model_name, options)`."""
    return task_class(name)(model_name, options)


__all__ = ["Task", "TaskData", "TASKS", "register_task", "task_class", "create_task"]
