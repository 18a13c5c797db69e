"""Tasks by name. A new task is one module under ``training/tasks/`` and one line here."""
from __future__ import annotations

from importlib import import_module

from training.tasks.base import Task

#: name -> "module:Class", imported on first use so ``pulsewire tasks`` does not load every task's data code.
_TASKS: dict[str, str] = {
    "af": "training.tasks.af:AfTask",
    "anomaly": "training.tasks.anomaly:AnomalyTask",
    "beat": "training.tasks.beat:BeatTask",
    "har": "training.tasks.har:HarTask",
    "tabular": "training.tasks.tabular:TabularTask",
}


def task_names() -> tuple[str, ...]:
    return tuple(sorted(_TASKS))


def make_task(name: str, max_persons: int | None = None) -> Task:
    """The task called ``name``; ``ValueError`` lists the known ones."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names()) or 'none'}")
    module, cls = _TASKS[name].split(":")
    return getattr(import_module(module), cls)(max_persons=max_persons)
