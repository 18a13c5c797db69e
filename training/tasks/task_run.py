"""One task run per seed, as the CLI's `--task NAME` does it: train, export float32 + int8, test once.

Selection happens inside training on "val"; the test split is scored only here, after selection, through the
exported models run by the edge-side ``TaskInterpreter`` (what a device would compute).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.task_model import TaskInterpreter
from training.federated.fleet import FleetConfig
from training.federated.local_training import LocalConfig
from training.federated.simulation import FederatedConfig
from training.tasks.base import Task
from training.tasks.export import export_task
from training.tasks.federated import run_task_federated
from training.tasks.fit import TaskModel, fit_task, prefixed_scalars

log = logging.getLogger(__name__)
MODES = ("simulate", "fleet", "export")


@dataclass(frozen=True)
class TaskRunSettings:
    #: "simulate" (federated in process), "fleet" (federated over MQTT) or "export" (centralized).
    mode: str = "simulate"
    rounds: int = 20
    strategy: str = "fedavg"
    strategy_args: dict[str, Any] = field(default_factory=dict)
    partition: str = "person"
    local_epochs: int = 2
    learning_rate: float = 0.3
    fraction: float = 1.0
    #: Centralized ("export") epochs, Adam at ``central_lr``.
    epochs: int = 30
    central_lr: float = 1e-3
    batch_size: int = 64
    encoding: str = "float32"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")

    def federated(self, seed: int) -> FederatedConfig:
        return FederatedConfig(rounds=self.rounds, strategy=self.strategy, strategy_args=dict(self.strategy_args),
                               partition=self.partition, fraction=self.fraction, seed=seed,
                               local=LocalConfig(epochs=self.local_epochs, batch_size=self.batch_size,
                                                 learning_rate=self.learning_rate))


def train_task(task: Task, settings: TaskRunSettings, seed: int, out: Path, broker=None, splits=None) -> TaskModel:
    train, val, test = splits or tuple(task.load(s, seed) for s in ("train", "val", "test"))
    if settings.mode == "export":
        return fit_task(task, train, val, settings.epochs, settings.batch_size, settings.central_lr, seed)
    fleet = FleetConfig(broker_url=broker, encoding=settings.encoding) if settings.mode == "fleet" else None
    return run_task_federated(task, train, val, settings.federated(seed), over_mqtt=settings.mode == "fleet",
                              fleet=fleet, run_dir=out / f"fleet_seed{seed}", test=test)


def run_task_seeds(task: Task, settings: TaskRunSettings, seeds: list[int], out: Path, broker=None) -> dict:
    """Per seed: the task's splits, training, export, the one test evaluation; mean/std of the int8 test metrics."""
    runs = []
    for seed in seeds:
        started = time.perf_counter()
        splits = tuple(task.load(s, seed) for s in ("train", "val", "test"))
        trained = train_task(task, settings, seed, out, broker, splits)
        train, val, test = splits
        task.calibrate(trained.predict, val)  # post-training constants (a threshold) from "val" only
        seconds = time.perf_counter() - started
        exported = {q: export_task(trained, train, out / f"{settings.mode}_seed{seed}", q, seed)
                    for q in ("float32", "int8")}
        scores = {q: task.evaluate(TaskInterpreter.from_file(ex.tflite_path).predict, test)
                  for q, ex in exported.items()}
        runs.append({"seed": seed, "best_epoch": trained.best_epoch, "val": trained.evaluate(val),
                     "test": scores, "int8_bytes": exported["int8"].size_bytes,
                     "float32_bytes": exported["float32"].size_bytes, "train_seconds": seconds,
                     "history": trained.history, "info": trained.info,
                     "model_paths": {q: str(ex.tflite_path) for q, ex in exported.items()}})
        log.info("%s seed %d: test int8 %s", task.name, seed, prefixed_scalars("test", scores["int8"]))
    return {"task": task.name, "selection_metric": task.selection_metric, "settings": asdict(settings),
            "seeds": list(seeds), "runs": runs,
            "summary": summarise([r["test"]["int8"] for r in runs])}


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{metric: {"mean", "std"}} over seeds for the scalar metrics every row has."""
    keys = [k for k in rows[0] if all(isinstance(r.get(k), (int, float)) for r in rows)] if rows else []
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))}
            for k in keys}
