"""Quantization-aware training with tensorflow-model-optimization on a tf_keras Conv2D twin.

tfmot works on tf_keras models only, and its ``quantize_model`` rejects Conv1D (ENVIRONMENT.md). The twin
is the same network written with Conv2D (k, 1) kernels — a Conv1D kernel (k, cin, cout) is the Conv2D
kernel (k, 1, cin, cout) — and the head as 1x1 Conv2D (``deploy.conv_head`` explains why). The wave input
stays (1, window, 1) with a Reshape inside, so devices and the metadata see the usual two inputs.
Fake-quantization nodes learn the int8 ranges while the weights adapt to int8 rounding.
"""
from __future__ import annotations

import logging

import keras
import numpy as np

from training.config import ModelConfig
from training.model import RR_INPUT, WAVE_INPUT
from training.optimize.fitting import FitConfig, FitResult, distillation_loss, fit_selected
from training.train import RRScaler
from training.data.beat_dataset import BeatDataset

log = logging.getLogger(__name__)


def _tf_keras():
    import tf_keras  # tfmot uses tf_keras whenever it is installed; Keras 3 stays the project's default
    import tensorflow_model_optimization as tfmot

    return tf_keras, tfmot


def conv2d_twin(cfg: ModelConfig, window: int, n_rr: int, n_classes: int, batch_size: int | None = None):
    """The ``build_classifier`` network in tf_keras with Conv2D (k, 1) kernels and a 1x1-conv head."""
    tfk, _ = _tf_keras()
    L = tfk.layers
    wave = tfk.Input(shape=(window, 1), batch_size=batch_size, name=WAVE_INPUT)
    rr = tfk.Input(shape=(n_rr,), batch_size=batch_size, name=RR_INPUT)
    x = L.Reshape((window, 1, 1), name="wave_2d")(wave)
    for i, (filters, kernel) in enumerate(zip(cfg.conv_filters, cfg.conv_kernels)):
        x = L.Conv2D(filters, (kernel, 1), padding="same", activation="relu", name=f"conv{i}")(x)
        if i < len(cfg.conv_filters) - 1:
            x = L.MaxPooling2D((2, 1), name=f"pool{i}")(x)
    x = L.Concatenate(name="join")([L.GlobalAveragePooling2D(name="gap")(x), rr])
    x = L.Reshape((1, 1, cfg.conv_filters[-1] + n_rr), name="join_1x1")(x)
    x = L.Conv2D(cfg.dense_units, (1, 1), activation="relu", name="dense")(x)
    if cfg.dropout:
        x = L.Dropout(cfg.dropout, name="dropout")(x)
    x = L.Reshape((n_classes,), name="logits")(L.Conv2D(n_classes, (1, 1), name="probs")(x))
    return tfk.Model([wave, rr], L.Softmax(name="softmax")(x), name="pulsewire_beat_cnn_conv2d")


def copy_into_twin(source: keras.Model, twin) -> None:
    """Conv1D (k, cin, cout) -> Conv2D (k, 1, cin, cout); Dense (in, out) -> 1x1 Conv2D (1, 1, in, out)."""
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        kernel, bias = weights
        if isinstance(layer, keras.layers.Conv1D):
            kernel = kernel[:, None]
        elif isinstance(layer, keras.layers.Dense):
            kernel = kernel[None, None]
        twin.get_layer(layer.name).set_weights([kernel, bias])


def quantize_aware(source: keras.Model, cfg: ModelConfig, train: BeatDataset, val: BeatDataset, scaler: RRScaler,
                   targets: np.ndarray, fit: FitConfig, alpha: float = 1.0, temperature: float = 1.0):
    """Fine-tune a QAT copy of ``source`` (selected on validation); returns (QAT model, fit result)."""
    tfk, tfmot = _tf_keras()
    tfk.utils.set_random_seed(fit.seed)
    twin = conv2d_twin(cfg, train.waves.shape[1], train.rr.shape[1], targets.shape[1] // 2)
    copy_into_twin(source, twin)
    qat = tfmot.quantization.keras.quantize_model(twin)
    qat.compile(optimizer=tfk.optimizers.Adam(fit.learning_rate), loss=distillation_loss(alpha, temperature))
    result: FitResult = fit_selected(qat, train, val, scaler, targets, fit, label="qat")
    return qat, result


def deployable_qat(qat, cfg: ModelConfig, window: int, n_rr: int, n_classes: int):
    """The trained QAT model rebuilt at batch size 1 (its reshapes fold to constants in the int8 graph)."""
    _, tfmot = _tf_keras()
    twin = tfmot.quantization.keras.quantize_model(conv2d_twin(cfg, window, n_rr, n_classes, batch_size=1))
    twin.set_weights(qat.get_weights())
    return twin
