"""The TensorFlow implementation of a device's ``LocalUpdater``: local SGD on the device's own beats.

Virtual devices of one fleet process share one Keras model and take turns (one training executor),
as a 2-core machine would anyway; each keeps its own data, random stream and SCAFFOLD control variate.
"""
from __future__ import annotations

from dataclasses import fields

import numpy as np

from broker.fed_messages import GlobalModel, LocalUpdate
from training.federated.local_training import LocalConfig, LocalTrainer

_LOCAL_KEYS = {f.name for f in fields(LocalConfig)}


class KerasDeviceUpdater:
    def __init__(self, name: str, trainer: LocalTrainer, wave: np.ndarray, rr: np.ndarray, labels: np.ndarray,
                 seed: int) -> None:
        if not len(labels):
            raise ValueError(f"device {name} has no training beats")
        self.name, self.trainer = name, trainer
        self.wave, self.rr, self.labels = wave, rr, labels
        self.rng = np.random.default_rng(seed)
        self.control: list[np.ndarray] | None = None

    def fit(self, model: GlobalModel) -> LocalUpdate:
        unknown = set(model.plan.local) - _LOCAL_KEYS
        if unknown:
            raise ValueError(f"round plan has local settings this device does not know: {sorted(unknown)}")
        cfg = LocalConfig(**model.plan.local)
        update, new_control = self.trainer.run(self.name, model.weights, self.wave, self.rr, self.labels, cfg,
                                               self.rng, model.server_control, self.control)
        if new_control is not None:
            self.control = new_control
        return LocalUpdate(update.delta, update.num_examples, update.local_steps, update.control_delta,
                           update.meta.get("train_loss"))
