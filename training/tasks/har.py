"""Human activity recognition (``har``): six activities from a waist-worn IMU (HAPT / UCI HAR raw signals).

Persons are the 30 HAPT subjects (one device each); "test" is the published UCI HAR test subjects, "val" three
training subjects held out (``training.data.hapt.VAL_SUBJECTS``). Inputs are 2.56 s windows (128 samples at
50 Hz, 50 % overlap) of acc x/y/z (g) and gyro x/y/z (rad/s), each channel standardised with the mean and std of
the *training* subjects' samples; the device applies the same constants from the ``EdgeContract``.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar

import keras
import numpy as np

from edge_runtime.metrics import classification_report
from edge_runtime.task_contract import EdgeContract
from training.data.hapt import (
    ACTIVITIES,
    ATTRIBUTION,
    CHANNELS,
    SAMPLE_RATE_HZ,
    HaptWindows,
    WindowSpec,
    channel_stats,
)
from training.data.imu_augment import ImuAugment, augment_windows
from training.tasks.base import SPLITS, Predict, Task, TaskSplit
from training.tasks.har_export import converter_model
from training.tasks.har_models import IMU_INPUT, MODELS, build

#: Training-window augmentation per model (``training.data.imu_augment``): one rotated (±15°), rescaled (±10 %)
#: copy of every training window for the CNN, chosen on the validation subjects (docs/tasks/har.md); the LSTM
#: keeps its first recipe (no copies), not re-run with augmentation.
AUGMENT = {"cnn": ImuAugment(copies=1, max_degrees=15.0, gain=0.1), "lstm": ImuAugment(copies=0)}
#: Alert kinds of the activity runner (``edge_runtime.activity``): a long unbroken stretch without walking.
ALERTS = ("prolonged_inactivity",)


def person_name(subject: int) -> str:
    return f"user{subject:02d}"


class HarTask(Task):
    name: ClassVar[str] = "har"
    summary: ClassVar[str] = ("six activities (walk, upstairs, downstairs, sit, stand, lie) from a waist IMU, "
                              "2.56 s windows, HAPT subjects as devices")
    class_names: ClassVar[tuple[str, ...]] = ACTIVITIES
    selection_metric: ClassVar[str] = "macro_f1"
    alerts: ClassVar[tuple[str, ...]] = ALERTS
    data_source: ClassVar[str] = ATTRIBUTION

    def __init__(self, max_persons: int | None = None, model: str = "cnn", data_dir: str | None = None,
                 spec: WindowSpec | None = None, augment: ImuAugment | None = None) -> None:
        """``model``: "cnn" (default) or "lstm" (exported as TFLite's fused LSTM, see ``har_models``);
        ``augment``: copies of the training windows (default: the model's recipe in ``AUGMENT``)."""
        super().__init__(max_persons)
        if model not in MODELS:
            raise ValueError(f"HAR model {model!r} unknown; choose one of {MODELS}")
        self.model = model
        self.augment = augment if augment is not None else AUGMENT[model]
        self._data_dir = data_dir
        self._spec = spec or WindowSpec()
        self._windows: HaptWindows | None = None
        self._scaler: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def windows(self) -> HaptWindows:
        if self._windows is None:
            self._windows = HaptWindows(self._data_dir, spec=self._spec)
        return self._windows

    def subjects(self, split: str) -> tuple[int, ...]:
        """The subjects of ``split``, capped at ``max_persons`` (the first ones by ID)."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r} unknown; one of {SPLITS}")
        subjects = self.windows.split_subjects()[split]
        return subjects[:self.max_persons] if self.max_persons else subjects

    def scaler(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (mean, std) over the training subjects' windows: what the device subtracts and divides."""
        if self._scaler is None:
            x, _, _ = self.windows.load(self.subjects("train"))
            self._scaler = channel_stats(x)
        return self._scaler

    def load(self, split: str, seed: int = 0) -> TaskSplit:
        """Standardised windows of ``split``; "train" also holds the augmented copies (drawn from ``seed``), each
        with its subject, so a subject's device trains on its own copies."""
        x, y, subject = self.windows.load(self.subjects(split))
        if split == "train" and self.augment.copies:
            x = augment_windows(x, self.augment, np.random.default_rng([seed, 17]))
            y, subject = np.tile(y, self.augment.copies + 1), np.tile(subject, self.augment.copies + 1)
        mean, std = self.scaler()
        z = ((x - mean) / std).astype(np.float32)
        return TaskSplit({IMU_INPUT: z}, y, np.array([person_name(s) for s in subject]))

    def build_model(self, train: TaskSplit, seed: int = 0) -> keras.Model:
        _, window, channels = train.inputs[IMU_INPUT].shape
        return build(self.model, window, channels, len(ACTIVITIES), seed)

    def evaluate(self, predict: Predict, split: TaskSplit) -> dict[str, float]:
        probs = np.asarray(predict(split.inputs))
        report = classification_report(split.targets, probs.argmax(axis=1), ACTIVITIES)
        out = {"accuracy": float(report["accuracy"] or 0.0), "macro_f1": float(report["macro_f1"] or 0.0)}
        for name, row in report["per_class"].items():
            if row["f1"] is not None:
                out[f"f1_{name}"] = float(row["f1"])
        return out

    def confusion(self, predict: Predict, split: TaskSplit) -> list[list[int]]:
        """Rows: true activity, columns: predicted (``ACTIVITIES`` order)."""
        probs = np.asarray(predict(split.inputs))
        return classification_report(split.targets, probs.argmax(axis=1), ACTIVITIES)["confusion"]

    def converter_model(self, model: keras.Model) -> Any:
        """The LSTM variant converts through its ``tf_keras`` twin (fused int8 LSTM); the CNN as it is."""
        return converter_model(model)

    def edge_contract(self, train: TaskSplit) -> EdgeContract:
        mean, std = self.scaler()
        return EdgeContract(task=self.name, source="imu", channels=CHANNELS, sample_rate_hz=SAMPLE_RATE_HZ,
                            window=self._spec.window,
                            preprocessing={"mean": [float(v) for v in mean], "std": [float(v) for v in std],
                                           "hop": self._spec.hop, "units": {"acc": "g", "gyro": "rad/s"},
                                           "model": self.model, "train_augment": asdict(self.augment),
                                           "train_subjects": [int(s) for s in self.subjects("train")]})
