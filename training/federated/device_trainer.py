"""The TensorFlow implementation of a device's ``LocalUpdater``: local SGD on the device's own rows.

Virtual devices of one fleet process share one Keras model and take turns (one training executor),
as a 2-core machine would anyway; each keeps its own data, random stream and SCAFFOLD control variate.
"""
from __future__ import annotations

from dataclasses import fields

import numpy as np

from broker.fed_messages import GlobalModel, LocalUpdate
from edge_runtime.dp_noise import make_noise
from training.federated.label_shift import output_scale
from training.federated.local_training import Inputs, LocalConfig, LocalTrainer

_LOCAL_KEYS = {f.name for f in fields(LocalConfig)}


class KerasDeviceUpdater:
    """``inputs``: the device's rows by model input name; ``targets``: what the loss compares the output with;
    ``row_weights``: each row's loss weight (a task's per-class weights looked up by label; None: 1);
    ``prior_ratio``: this device's class frequencies over the fleet's (``label_shift.prior_ratio``), applied
    when the round plan asks for ``label_shift`` (a classifier device; None: it cannot, and says so);
    ``dp_noise``: where DP-SGD's Poisson sampling and noise come from (``edge_runtime.dp_noise``): "secure", or
    "seeded" from ``seed`` (the stream the device's shuffling used to share: reproducible runs only)."""

    def __init__(self, name: str, trainer: LocalTrainer, inputs: Inputs, targets: np.ndarray, seed: int,
                 row_weights: np.ndarray | None = None, prior_ratio: np.ndarray | None = None,
                 dp_noise: str = "secure") -> None:
        if not len(targets):
            raise ValueError(f"device {name} has no training rows")
        self.prior_ratio = prior_ratio
        self.name, self.trainer = name, trainer
        self.inputs, self.targets, self.row_weights = inputs, targets, row_weights
        self.rng = np.random.default_rng(seed)
        self.noise = make_noise(dp_noise, seed if dp_noise == "seeded" else None)
        self.control: list[np.ndarray] | None = None

    def fit(self, model: GlobalModel) -> LocalUpdate:
        unknown = set(model.plan.local) - _LOCAL_KEYS
        if unknown:
            raise ValueError(f"round plan has local settings this device does not know: {sorted(unknown)}")
        cfg = LocalConfig(**model.plan.local).for_round(model.plan.round)
        if cfg.label_shift and self.prior_ratio is None:
            raise ValueError(f"round plan asks device {self.name} for label-shift correction, but it has no class "
                             "prior (only classifier devices built with prior_ratio can apply it)")
        update, new_control = self.trainer.run(self.name, model.weights, self.inputs, self.targets, cfg, self.rng,
                                               model.server_control, self.control, self.row_weights,
                                               output_scale(self.prior_ratio, cfg.label_shift_floor)
                                               if cfg.label_shift else None, self.noise)
        if new_control is not None:
            self.control = new_control
        return LocalUpdate(update.delta, update.num_examples, update.local_steps, update.control_delta,
                           update.meta.get("train_loss"))
