"""Centralized training of any task: the reference its federated runs are compared with.

The epoch is selected on "val" (persons held out of the training side) by ``task.selection_metric`` and its
weights restored; "test" is never looked at here.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from training.tasks.base import Task, TaskSplit

log = logging.getLogger(__name__)


@dataclass
class TaskModel:
    """A trained model of ``task`` with its selection history (one row per epoch or round, "val_" metrics)."""

    task: Task
    model: keras.Model
    history: list[dict] = field(default_factory=list)
    #: The epoch (centralized) or round (federated) whose weights the model holds; 0: the initial weights.
    best_epoch: int = 0
    #: How it was trained (transport, devices, wall time, ...): reported, never used for a choice.
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.model.predict(inputs, batch_size=2048, verbose=0)

    def evaluate(self, split: TaskSplit) -> dict[str, float]:
        return self.task.evaluate(self.predict, split)


def keras_predict(model: keras.Model):
    """A task's ``Predict`` for a Keras model."""
    return lambda inputs: model.predict(inputs, batch_size=2048, verbose=0)


def prefixed_scalars(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of ``evaluate`` as history columns ("val_accuracy", ...); nested ones are skipped."""
    return {f"{prefix}_{k}": float(v) for k, v in metrics.items()
            if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)}


def row_weights(task: Task, split: TaskSplit) -> np.ndarray | None:
    """Each row's loss weight: the task's per-class weights looked up by the row's target (None: all 1)."""
    weights = task.sample_weights(split)
    return None if weights is None else np.asarray(weights, np.float32)[split.targets]


class _RowLoss(keras.losses.Loss):
    """The task's per-row loss (reduction "none") reduced to one value per row, then Keras's weighted mean."""

    def __init__(self, inner: keras.losses.Loss) -> None:
        super().__init__(name=f"task_{inner.name}", reduction="sum_over_batch_size")
        self.inner = inner

    def call(self, y_true, y_pred):
        per_row = self.inner(y_true, y_pred)
        if len(per_row.shape) > 1:
            per_row = keras.ops.mean(per_row, axis=tuple(range(1, len(per_row.shape))))
        return per_row


class _SelectEpoch(keras.callbacks.Callback):
    def __init__(self, task: Task, val: TaskSplit, history: list[dict]) -> None:
        super().__init__()
        self.task, self.val, self.history = task, val, history
        self.best_score, self.best_epoch, self.best_weights = -math.inf, 0, None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = self.task.evaluate(keras_predict(self.model), self.val)
        score = metrics[self.task.selection_metric]
        row = {"epoch": epoch + 1, "loss": float((logs or {}).get("loss", np.nan)), **prefixed_scalars("val", metrics)}
        self.history.append(row)
        log.info("epoch %d loss %.4f val %s %.4f", epoch + 1, row["loss"], self.task.selection_metric, score)
        if score is not None and score > self.best_score:
            self.best_score, self.best_epoch, self.best_weights = score, epoch + 1, self.model.get_weights()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def fit_task(task: Task, train: TaskSplit, val: TaskSplit, epochs: int = 30, batch_size: int = 64,
             learning_rate: float = 1e-3, seed: int = 0, verbose: int = 0) -> TaskModel:
    """Adam on ``train`` with the task's loss, targets and sample weights; the epoch with the best
    ``task.selection_metric`` on ``val`` is kept."""
    if epochs < 1 or batch_size < 1 or learning_rate <= 0:
        raise ValueError("epochs and batch_size must be >= 1 and learning_rate > 0")
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"task {task.name!r}: training and validation splits must both hold rows")
    keras.utils.set_random_seed(seed)
    model = task.build_model(train, seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=_RowLoss(task.loss()))
    history: list[dict] = []
    selector = _SelectEpoch(task, val, history)
    model.fit(train.inputs, task.training_targets(train), sample_weight=row_weights(task, train),
              batch_size=batch_size, epochs=epochs, callbacks=[selector], shuffle=True, verbose=verbose)
    return TaskModel(task, model, history, selector.best_epoch, {"training": "centralized", "epochs": epochs})
