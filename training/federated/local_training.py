"""A device's local training round: plain SGD steps, optionally with FedProx's proximal term or
SCAFFOLD's drift correction, or record-level DP-SGD. One tf.function step serves all strategies.

The trainer knows nothing about beats: it takes the model's inputs by name, the targets its per-row loss
compares the output with (a task's ``loss()`` and ``training_targets()``) and optional per-row weights (the
task's per-class ``sample_weights`` looked up by label). The beat classifier is one such task: inputs
{"wave", "rr"}, sparse cross-entropy, class weights.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from edge_runtime.dp_noise import NoiseSource, make_noise
from training.federated.local_config import LocalConfig
from training.federated.strategies import ClientUpdate, Weights

Inputs = dict[str, np.ndarray]
__all__ = ["Inputs", "LocalConfig", "LocalTrainer"]


class LocalTrainer:
    """Runs local rounds on one shared Keras model (devices take turns in the simulator).

    ``loss``: per-row loss (reduction "none"; default sparse categorical cross-entropy); rows with more
    dimensions (an autoencoder's per-sample error) are averaged to one value per row."""

    def __init__(self, model: keras.Model, loss: keras.losses.Loss | None = None) -> None:
        if len(model.weights) != len(model.trainable_variables):
            raise ValueError("local training expects a model without non-trainable weights (no batch norm)")
        self.model = model
        self._loss = loss or keras.losses.SparseCategoricalCrossentropy(reduction="none")

    def _per_row(self, inputs, y, w, scale=None, training: bool = True):
        """Weighted per-row loss; ``scale`` (label-shift ratios, ``training.federated.label_shift``) reweights
        and renormalises the output probabilities first."""
        out = self.model(inputs, training=training)
        if scale is not None:
            out = out * scale
            out = out / tf.reduce_sum(out, axis=-1, keepdims=True)
        per_row = self._loss(y, out)
        if per_row.shape.rank > 1:
            per_row = tf.reduce_mean(per_row, axis=list(range(1, per_row.shape.rank)))
        return per_row * w

    @tf.function(reduce_retracing=True)
    def _epochs(self, inputs, y, w, scale, orders, batch_size, lr, mu, anchor, correction, clip):
        """Every local epoch in one graph, epoch e visiting the rows in ``orders[e]``: a Python loop of per-step
        calls spent a quarter of the simulator's time on call overhead, and a call per epoch made a fleet of
        small devices (a few batches, many epochs each) ten times slower. Returns each epoch's mean step loss."""
        epochs, n = tf.shape(orders)[0], tf.shape(orders)[1]
        batches = (n + batch_size - 1) // batch_size
        losses = tf.TensorArray(tf.float32, size=epochs)
        for e in tf.range(epochs):
            total = tf.constant(0.0)
            for b in tf.range(batches):
                idx = orders[e, b * batch_size:tf.minimum(n, (b + 1) * batch_size)]
                total += self._step({k: tf.gather(v, idx) for k, v in inputs.items()}, tf.gather(y, idx),
                                    tf.gather(w, idx), scale, lr, mu, anchor, correction, clip)
            losses = losses.write(e, total / tf.cast(batches, tf.float32))
        return losses.stack()

    def _step(self, inputs, y, w, scale, lr, mu, anchor, correction, clip):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(self._per_row(inputs, y, w, scale))
            prox = tf.add_n([tf.reduce_sum(tf.square(v - a)) for v, a in zip(self.model.trainable_variables, anchor)])
            total = loss + 0.5 * mu * prox
        grads = tape.gradient(total, self.model.trainable_variables)
        self._apply([g + c for g, c in zip(grads, correction)], lr, clip)
        return loss

    def _apply(self, steps, lr, clip):
        norm = tf.linalg.global_norm(steps)
        factor = tf.where(clip > 0, tf.minimum(1.0, clip / (norm + 1e-12)), 1.0)  # exactly 1 when disabled
        for var, step in zip(self.model.trainable_variables, steps):
            var.assign_sub(lr * factor * step)

    @tf.function(reduce_retracing=True)
    def _dp_step(self, inputs, y, w, scale, noise, denominator, dp_clip, lr, mu, anchor, correction, clip):
        """One DP-SGD step (Abadi et al. 2016) on a Poisson-sampled batch: per-record gradients clipped to
        ``dp_clip``, summed, Gaussian noise (already scaled σ·C) added, divided by the expected batch size (a
        fixed denominator, so the batch's real size is not released). FedProx and SCAFFOLD terms depend on no
        record and are added after the noise."""
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            per_row = self._per_row(inputs, y, w, scale)
        jac = tape.jacobian(per_row, variables)  # per-record gradients, [rows, *variable shape] each
        norms = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(tf.reshape(j, [tf.shape(j)[0], -1])), axis=1)
                                  for j in jac]))
        scale = tf.minimum(1.0, dp_clip / (norms + 1e-12))
        grads = [(tf.tensordot(scale, j, axes=1) + z) / denominator for j, z in zip(jac, noise)]
        steps = [g + mu * (v - a) + c for g, v, a, c in zip(grads, variables, anchor, correction)]
        self._apply(steps, lr, clip)
        return tf.reduce_mean(per_row)

    @tf.function(reduce_retracing=True)
    def _dp_noise_step(self, noise, denominator, lr, mu, anchor, correction, clip):
        """A DP-SGD step on an empty Poisson batch: the clipped sum is zero, the noise is added as always."""
        variables = self.model.trainable_variables
        self._apply([z / denominator + mu * (v - a) + c for z, v, a, c in zip(noise, variables, anchor, correction)],
                    lr, clip)

    def _dp_epochs(self, inputs: dict, y: tf.Tensor, w: tf.Tensor, scale: tf.Tensor | None, cfg: LocalConfig,
                   rng: NoiseSource, consts: tuple) -> list[float]:
        """``cfg.epochs`` × round(1/q) Poisson-sampled DP-SGD steps; empty batches still add the noise. ``rng``
        draws both the sampling and the noise: amplification by sampling also needs a sample nobody can predict."""
        n = int(y.shape[0])
        std = cfg.dpsgd_noise * cfg.dpsgd_clip
        denominator = tf.constant(cfg.dpsgd_rate * n, tf.float32)
        losses = []
        for _ in range(cfg.epochs):
            for _ in range(cfg.dpsgd_steps_per_epoch):
                idx = tf.constant(np.flatnonzero(rng.random(n) < cfg.dpsgd_rate).astype(np.int32))
                noise = [tf.constant(rng.normal(0.0, std, v.shape).astype(np.float32))
                         for v in self.model.trainable_variables]
                if idx.shape[0] == 0:  # no record sampled: the step is the noise alone (the jacobian of none fails)
                    self._dp_noise_step(noise, denominator, *consts)
                    continue
                batch = {k: tf.gather(v, idx) for k, v in inputs.items()}
                losses.append(float(self._dp_step(batch, tf.gather(y, idx), tf.gather(w, idx), scale, noise,
                                                  denominator, tf.constant(cfg.dpsgd_clip, tf.float32), *consts)))
        return losses

    def run(self, device: str, global_weights: Weights, inputs: Inputs, targets: np.ndarray, cfg: LocalConfig,
            rng: np.random.Generator, server_control: Weights | None = None,
            device_control: Weights | None = None, row_weights: np.ndarray | None = None,
            output_scale: np.ndarray | None = None, noise: NoiseSource | None = None
            ) -> tuple[ClientUpdate, Weights | None]:
        """Train from ``global_weights`` on ``inputs`` (by the model's input names) against ``targets``;
        ``row_weights``: each row's loss weight (None: 1); ``output_scale``: per-class factors on the output
        probabilities in the loss (label-shift correction; None: the output as it is). Returns the update and
        (SCAFFOLD) the device's new control. With DP-SGD the update carries no training loss (it is not a
        private release), and its sampling and noise come from ``noise`` (``edge_runtime.dp_noise``; None: a fresh
        secure source), never from ``rng``, which only shuffles."""
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
        n = len(targets)
        y = tf.constant(targets.astype(np.int32) if np.issubdtype(targets.dtype, np.integer)
                        else targets.astype(np.float32))
        w = tf.constant(np.ones(n, np.float32) if row_weights is None else row_weights.astype(np.float32))
        scale = None if output_scale is None else tf.constant(np.asarray(output_scale, np.float32))
        data = ({k: tf.constant(v) for k, v in inputs.items()}, y, w, scale)
        if cfg.dpsgd_noise > 0:
            draws = noise if noise is not None else make_noise()  # DP-SGD: never the shuffling stream
            losses = self._dp_epochs(*data, cfg, draws, (lr, mu, anchor, correction, clip)) if n else []
            steps = cfg.epochs * cfg.dpsgd_steps_per_epoch
        else:
            batch = tf.constant(cfg.batch_size, tf.int32)
            orders = np.stack([rng.permutation(n) for _ in range(cfg.epochs)]).astype(np.int32)
            losses = self._epochs(*data, tf.constant(orders), batch, lr, mu, anchor, correction,
                                  clip).numpy().tolist() if n else []
            steps = cfg.epochs * -(-n // cfg.batch_size)
        local = self.model.get_weights()
        delta = [lw - gw for lw, gw in zip(local, global_weights)]
        new_control, control_delta = None, None
        if scaffold:
            # option II of the paper: c_i+ = c_i - c + (w_global - w_local) / (K · lr)
            new_control = [ci - c + (gw - lw) / (steps * cfg.learning_rate)
                           for ci, c, gw, lw in zip(device_control, server_control, global_weights, local)]
            control_delta = [n - o for n, o in zip(new_control, device_control)]
        private = cfg.dpsgd_noise > 0
        update = ClientUpdate(device, delta, int(n), steps, control_delta,
                              meta={"train_loss": float(np.mean(losses)) if losses and not private else None})
        return update, new_control
