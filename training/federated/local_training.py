"""A device's local training round: plain SGD steps, optionally with FedProx's proximal term or
SCAFFOLD's drift correction. One tf.function step serves all strategies."""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from training.federated.strategies import ClientUpdate, Weights


@dataclass(frozen=True)
class LocalConfig:
    epochs: int = 2
    batch_size: int = 64
    #: Plain SGD on this small net needs a large step: on held-out DS1 patients (seed 0) 0.01 and 0.05
    #: left FedAvg near an all-N model after 10 rounds, 0.3 climbed steadily.
    learning_rate: float = 0.3
    #: FedProx: weight of (mu/2)·||w - w_global||²; 0 disables it.
    proximal_mu: float = 0.0
    #: Clip each local step (gradient plus SCAFFOLD's correction) to this global L2 norm; 0 disables it.
    #: A large step on an outlier batch, or a large drift correction, otherwise sends weights to NaN.
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        if (self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0 or self.proximal_mu < 0
                or self.grad_clip < 0):
            raise ValueError("epochs and batch_size >= 1, learning_rate > 0, proximal_mu >= 0 and grad_clip >= 0 "
                             "required")


class LocalTrainer:
    """Runs local rounds on one shared Keras model (devices take turns in the simulator)."""

    def __init__(self, model: keras.Model, class_weights: np.ndarray) -> None:
        if len(model.weights) != len(model.trainable_variables):
            raise ValueError("local training expects a model without non-trainable weights (no batch norm)")
        self.model = model
        self._class_weights = tf.constant(class_weights, tf.float32)
        self._loss = keras.losses.SparseCategoricalCrossentropy(reduction="none")

    @tf.function(reduce_retracing=True)
    def _epochs(self, wave, rr, y, orders, batch_size, lr, mu, anchor, correction, clip):
        """Every local epoch in one graph, epoch e visiting the beats in ``orders[e]``: a Python loop of per-step
        calls spent a quarter of the simulator's time on call overhead, and a call per epoch made a fleet of
        small devices (a few batches, many epochs each) ten times slower. Returns each epoch's mean step loss."""
        epochs, n = tf.shape(orders)[0], tf.shape(orders)[1]
        batches = (n + batch_size - 1) // batch_size
        losses = tf.TensorArray(tf.float32, size=epochs)
        for e in tf.range(epochs):
            total = tf.constant(0.0)
            for b in tf.range(batches):
                idx = orders[e, b * batch_size:tf.minimum(n, (b + 1) * batch_size)]
                total += self._step(tf.gather(wave, idx), tf.gather(rr, idx), tf.gather(y, idx), lr, mu, anchor,
                                    correction, clip)
            losses = losses.write(e, total / tf.cast(batches, tf.float32))
        return losses.stack()

    def _step(self, wave, rr, y, lr, mu, anchor, correction, clip):
        with tf.GradientTape() as tape:
            probs = self.model([wave, rr], training=True)
            per_beat = self._loss(y, probs) * tf.gather(self._class_weights, y)
            loss = tf.reduce_mean(per_beat)
            prox = tf.add_n([tf.reduce_sum(tf.square(w - a)) for w, a in zip(self.model.trainable_variables, anchor)])
            total = loss + 0.5 * mu * prox
        grads = tape.gradient(total, self.model.trainable_variables)
        steps = [g + c for g, c in zip(grads, correction)]
        norm = tf.linalg.global_norm(steps)
        factor = tf.where(clip > 0, tf.minimum(1.0, clip / (norm + 1e-12)), 1.0)  # exactly 1 when disabled
        for var, step in zip(self.model.trainable_variables, steps):
            var.assign_sub(lr * factor * step)
        return loss

    def run(self, device: str, global_weights: Weights, wave: np.ndarray, rr: np.ndarray, labels: np.ndarray,
            cfg: LocalConfig, rng: np.random.Generator, server_control: Weights | None = None,
            device_control: Weights | None = None) -> tuple[ClientUpdate, Weights | None]:
        """Train from ``global_weights``; returns the update and (SCAFFOLD) the device's new control."""
        self.model.set_weights(global_weights)
        anchor = [tf.constant(w) for w in global_weights]
        scaffold = server_control is not None
        if scaffold:
            device_control = device_control or [np.zeros_like(w) for w in global_weights]
            correction = [tf.constant(c - ci) for c, ci in zip(server_control, device_control)]
        else:
            correction = [tf.zeros_like(a) for a in anchor]
        lr, mu = tf.constant(cfg.learning_rate, tf.float32), tf.constant(cfg.proximal_mu, tf.float32)
        clip = tf.constant(cfg.grad_clip, tf.float32)
        data = (tf.constant(wave), tf.constant(rr), tf.constant(labels.astype(np.int32)))
        batch = tf.constant(cfg.batch_size, tf.int32)
        orders = np.stack([rng.permutation(labels.size) for _ in range(cfg.epochs)]).astype(np.int32)
        losses = self._epochs(*data, tf.constant(orders), batch, lr, mu, anchor, correction,
                              clip).numpy().tolist() if labels.size else []
        steps = cfg.epochs * -(-labels.size // cfg.batch_size)
        local = self.model.get_weights()
        delta = [lw - gw for lw, gw in zip(local, global_weights)]
        new_control, control_delta = None, None
        if scaffold:
            # option II of the paper: c_i+ = c_i - c + (w_global - w_local) / (K · lr)
            new_control = [ci - c + (gw - lw) / (steps * cfg.learning_rate)
                           for ci, c, gw, lw in zip(device_control, server_control, global_weights, local)]
            control_delta = [n - o for n, o in zip(new_control, device_control)]
        update = ClientUpdate(device, delta, int(labels.size), steps, control_delta,
                              meta={"train_loss": float(np.mean(losses)) if losses else None})
        return update, new_control
