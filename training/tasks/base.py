"""The narrow interface every task offers the pipeline (train, federate, export, run on the edge, report).

A task owns its data and per-person partition, its model, loss and metrics, the metric that selects rounds and
epochs (computed on held-out persons only), the constants the device needs (``EdgeContract``) and the alerts it
can raise. The federated round engine, the exporter and the reports see only this interface, so a new task is a
new module plus one line in ``registry``; nothing else in the pipeline changes.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable

import keras
import numpy as np

from edge_runtime.task_contract import EdgeContract

#: The three splits every task provides. "val" holds persons of the training side kept out of training (what
#: selects epochs and rounds); "test" holds the task's published test persons (never used to choose anything).
SPLITS = ("train", "val", "test")

Predict = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class TaskSplit:
    """Rows of one split: the model's inputs (by input name, preprocessed as the device would), the targets and
    the person (device) each row belongs to."""

    inputs: dict[str, np.ndarray]
    targets: np.ndarray
    persons: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.persons)
        bad = {k: len(v) for k, v in self.inputs.items() if len(v) != n}
        if bad or len(self.targets) != n:
            raise ValueError(f"every input, the targets and persons need {n} rows; got inputs {bad or 'ok'}, "
                             f"targets {len(self.targets)}")
        for name, array in self.inputs.items():
            if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                raise ValueError(f"input {name!r} holds NaN or infinite values")

    def __len__(self) -> int:
        return len(self.persons)

    def subset(self, index: np.ndarray) -> "TaskSplit":
        return TaskSplit({k: v[index] for k, v in self.inputs.items()}, self.targets[index], self.persons[index])

    def of_persons(self, persons: Iterable[str]) -> "TaskSplit":
        return self.subset(np.flatnonzero(np.isin(self.persons, list(persons))))


class Task(ABC):
    """One learning task. Subclasses set the class attributes and implement the abstract methods; the other
    methods are hooks with the defaults most classification tasks want."""

    #: Registry name (``--task NAME``).
    name: ClassVar[str]
    #: One line for ``pulsewire tasks``.
    summary: ClassVar[str]
    #: Output class names (empty for tasks whose output is not a class, e.g. an autoencoder's reconstruction).
    class_names: ClassVar[tuple[str, ...]] = ()
    #: Key of ``evaluate``'s result that selects epochs and rounds on "val" (higher is better).
    selection_metric: ClassVar[str]
    #: Alert kinds the task can raise on a device.
    alerts: ClassVar[tuple[str, ...]] = ()
    #: Where the data comes from and its attribution (shown by ``pulsewire tasks`` and in reports).
    data_source: ClassVar[str] = ""

    def __init__(self, max_persons: int | None = None) -> None:
        """``max_persons`` caps the persons (devices, subjects, hospitals) ``load`` returns per split: a small real
        slice for tests and ``--quick`` runs. None loads everything."""
        if max_persons is not None and max_persons < 1:
            raise ValueError(f"max_persons must be >= 1, got {max_persons}")
        self.max_persons = max_persons

    @abstractmethod
    def load(self, split: str, seed: int = 0) -> TaskSplit:
        """Rows of ``split`` (one of ``SPLITS``); raises ``ValueError`` naming what is missing or wrong."""

    @abstractmethod
    def build_model(self, train: TaskSplit, seed: int = 0) -> keras.Model:
        """An untrained model whose inputs are named as ``TaskSplit.inputs``' keys; only ops the int8 exporter
        (and, where the task says so, the C generator) supports."""

    @abstractmethod
    def evaluate(self, predict: Predict, split: TaskSplit) -> dict[str, float]:
        """Metrics of a model (any callable from inputs to outputs: Keras, float or int8 TFLite) on ``split``;
        must contain ``selection_metric``."""

    @abstractmethod
    def edge_contract(self, train: TaskSplit) -> EdgeContract:
        """What the device feeds the model, with the constants (scalers, thresholds) fitted on ``train``."""

    def calibrate(self, predict: Predict, val: TaskSplit) -> None:
        """Fit post-training constants on "val" (e.g. an anomaly threshold) before the edge contract is exported and
        the test split scored; called once after training. Default: nothing to fit."""

    def loss(self) -> keras.losses.Loss:
        """Per-row loss (reduction "none"; the trainer applies ``sample_weights`` and averages)."""
        return keras.losses.SparseCategoricalCrossentropy(reduction="none")

    def training_targets(self, split: TaskSplit) -> np.ndarray:
        """What the loss compares the model's output with (an autoencoder returns its input)."""
        return split.targets

    def sample_weights(self, train: TaskSplit) -> np.ndarray | None:
        """Per-class weights indexed by target (None: every row weighs 1)."""
        return None

    def partition(self, train: TaskSplit, spec: str, seed: int) -> list[np.ndarray]:
        """Row indices per device. "person" (default): one device per person; "iid:N": N random equal shares."""
        kind, *args = spec.split(":")
        if kind in ("person", "patient") and not args:
            return [np.flatnonzero(train.persons == p) for p in np.unique(train.persons)]
        if kind == "iid" and len(args) == 1 and args[0].isdigit() and int(args[0]) >= 1:
            order = np.random.default_rng(seed).permutation(len(train))
            return [np.sort(part) for part in np.array_split(order, int(args[0]))]
        raise ValueError(f"partition {spec!r} not understood for task {self.name!r}; use person or iid:N")

    def representative(self, train: TaskSplit, n: int, seed: int) -> dict[str, np.ndarray]:
        """Rows that calibrate int8 activation ranges (default: ``n`` random training rows)."""
        pick = np.random.default_rng(seed).choice(len(train), size=min(n, len(train)), replace=False)
        return {k: v[np.sort(pick)] for k, v in train.inputs.items()}

    def converter_model(self, model: keras.Model) -> Any:
        """What the TFLite converter is given for ``model`` (default: the model itself). A task whose layers the
        converter cannot take from Keras 3 returns an equivalent graph here (e.g. ``har``: a ``tf_keras`` twin
        whose LSTM converts to the fused int8 op)."""
        return model

    def describe(self) -> dict[str, Any]:
        """The row of ``pulsewire tasks``."""
        return {"name": self.name, "summary": self.summary, "classes": list(self.class_names),
                "selection_metric": self.selection_metric, "alerts": list(self.alerts), "data": self.data_source}
