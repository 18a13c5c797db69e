"""Pruning in Keras 3 directly: magnitude pruning with a polynomial schedule, and structured pruning.

Magnitude pruning zeroes the smallest weights of every conv and dense kernel (biases stay) after each
training step, ramping the sparsity from 0 to the target like tfmot's PolynomialDecay, so the network
adapts while weights are removed. TFLite stores dense tensors, so zeros do not shrink the int8 file or
the arena: they only compress. Structured pruning removes whole filters (ranked by L1 norm) and dense
units, rebuilds a narrower network with the survivors' weights and fine-tunes it: that shrinks the file,
the MACs and the activations.
"""
from __future__ import annotations

import math
from dataclasses import replace

import keras
import numpy as np

from training.config import ModelConfig
from training.model import build_classifier


def prunable_kernels(model: keras.Model) -> list:
    """The kernels of every Conv1D and Dense layer (what magnitude pruning zeroes)."""
    return [layer.kernel for layer in model.layers if isinstance(layer, (keras.layers.Conv1D, keras.layers.Dense))]


def polynomial_sparsity(step: int, end_step: int, target: float, power: float = 3.0) -> float:
    """tfmot's PolynomialDecay from 0: fast early, flat near the target; ``target`` from ``end_step`` on."""
    if step >= end_step:
        return target
    return target * (1.0 - (1.0 - step / end_step) ** power)


def prune_smallest(kernel: np.ndarray, sparsity: float) -> np.ndarray:
    """``kernel`` with exactly round(sparsity * size) of its smallest-magnitude entries set to 0."""
    k = int(round(sparsity * kernel.size))
    out = kernel.copy()
    if k:
        out.reshape(-1)[np.argpartition(np.abs(kernel).reshape(-1), k - 1)[:k]] = 0
    return out


def kernel_sparsity(model: keras.Model) -> float:
    """Share of exact zeros over all prunable kernels (measured, never assumed)."""
    kernels = [np.asarray(k) for k in prunable_kernels(model)]
    return float(sum(np.count_nonzero(k == 0) for k in kernels) / sum(k.size for k in kernels))


class MagnitudePruning(keras.callbacks.Callback):
    """After every training step, zero each kernel's smallest weights at the schedule's current sparsity.

    The step counter survives repeated ``fit`` calls (``fit_selected`` trains one epoch per call).
    """

    def __init__(self, target: float, end_step: int, power: float = 3.0) -> None:
        super().__init__()
        if not 0 <= target < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {target}")
        self.target, self.end_step, self.power = target, max(1, end_step), power
        self.step = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step += 1
        self.apply(polynomial_sparsity(self.step, self.end_step, self.target, self.power))

    def apply(self, sparsity: float) -> None:
        for kernel in prunable_kernels(self.model):
            kernel.assign(prune_smallest(np.asarray(kernel), sparsity))


def _keep(scores: np.ndarray, n_keep: int) -> np.ndarray:
    """Indices of the ``n_keep`` largest scores, in their original order (ties: lower index first)."""
    return np.sort(np.argsort(-scores, kind="stable")[:n_keep])


def narrower_config(cfg: ModelConfig, fraction: float) -> ModelConfig:
    """Remove ``fraction`` of every conv layer's filters and of the dense units (at least one stays)."""
    if not 0 < fraction < 1:
        raise ValueError(f"structured pruning fraction must be in (0, 1), got {fraction}")
    keep = lambda n: max(1, int(math.ceil(n * (1 - fraction))))  # noqa: E731
    return replace(cfg, conv_filters=tuple(keep(f) for f in cfg.conv_filters), dense_units=keep(cfg.dense_units))


def structured_prune(model: keras.Model, cfg: ModelConfig, fraction: float) -> tuple[keras.Model, ModelConfig]:
    """A narrower network holding the surviving filters' and units' weights of ``model``.

    A conv filter is ranked by the L1 norm of its kernel; removing it removes its output channel and the
    matching input channel of the next conv (or the matching row of the dense kernel, after global
    averaging). Dense units are ranked by the L1 norm of their incoming weights; the RR rows all stay.
    """
    small_cfg = narrower_config(cfg, fraction)
    window, n_rr = model.get_layer("conv0").input.shape[1], model.get_layer("join").input[1].shape[-1]
    n_classes = model.get_layer("probs").units
    small = build_classifier(window, n_rr, n_classes, small_cfg)
    kept_in = np.arange(1)  # the wave has one channel
    for i, n_keep in enumerate(small_cfg.conv_filters):
        kernel, bias = model.get_layer(f"conv{i}").get_weights()
        kept = _keep(np.abs(kernel).sum(axis=(0, 1)), n_keep)
        small.get_layer(f"conv{i}").set_weights([kernel[:, kept_in][:, :, kept], bias[kept]])
        kept_in = kept
    kernel, bias = model.get_layer("dense").get_weights()
    rows = np.concatenate([kept_in, cfg.conv_filters[-1] + np.arange(n_rr)])  # pooled features, then RR
    units = _keep(np.abs(kernel).sum(axis=0), small_cfg.dense_units)
    small.get_layer("dense").set_weights([kernel[rows][:, units], bias[units]])
    kernel, bias = model.get_layer("probs").get_weights()
    small.get_layer("probs").set_weights([kernel[units], bias])
    return small, small_cfg
