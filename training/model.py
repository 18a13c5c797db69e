"""The beat classifier network (Keras): small enough for a Cortex-M4, RR features beside the waveform."""
from __future__ import annotations

import keras

from training.config import ModelConfig

WAVE_INPUT = "wave"
RR_INPUT = "rr"


def build_classifier(window: int, n_rr: int, n_classes: int, cfg: ModelConfig) -> keras.Model:
    """Conv blocks (conv -> ReLU -> max-pool) on the beat, global average, concat RR, dense, softmax.

    Only ops that TFLite-Micro and pulsewire's C kernels support: CONV_2D (Conv1D is converted to it),
    MAX_POOL_2D, MEAN, CONCATENATION, FULLY_CONNECTED, SOFTMAX. Batch norm is avoided on purpose: it
    folds away at export anyway, and with batch-1 devices it only adds a train/serve gap.
    """
    wave = keras.Input(shape=(window, 1), name=WAVE_INPUT)
    rr = keras.Input(shape=(n_rr,), name=RR_INPUT)
    x = wave
    for i, (filters, kernel) in enumerate(zip(cfg.conv_filters, cfg.conv_kernels)):
        x = keras.layers.Conv1D(filters, kernel, padding="same", activation="relu", name=f"conv{i}")(x)
        if i < len(cfg.conv_filters) - 1:
            x = keras.layers.MaxPooling1D(2, name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    x = keras.layers.Concatenate(name="join")([x, rr])
    x = keras.layers.Dense(cfg.dense_units, activation="relu", name="dense")(x)
    if cfg.dropout:
        x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    out = keras.layers.Dense(n_classes, activation="softmax", name="probs")(x)
    return keras.Model([wave, rr], out, name="pulsewire_beat_cnn")
