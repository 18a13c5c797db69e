"""The two activity networks: a small 1D-CNN and a conv + LSTM variant, both on (128, 6) standardised IMU windows.

Why the LSTM needs its own export graph: Keras 3's LSTM traces to a TensorList ``WHILE`` loop that TFLite
neither fuses nor quantizes (``from_keras_model`` fails on the dynamic batch; with batch 1 it converts to float
``WHILE`` + ``BATCH_MATMUL`` and int8 conversion fails). The legacy ``tf_keras`` LSTM carries the annotation the
converter fuses into one ``UNIDIRECTIONAL_SEQUENCE_LSTM`` op, which converts to full int8 (int8 weights and
activations, int16 cell state inside the kernel). ``tf_keras_twin`` rebuilds a trained model layer for layer in
``tf_keras`` with batch 1 and copies its weights (same kernel layout, gate order i, f, c, o), so training,
federation and evaluation stay on Keras 3 and only the converter sees the twin.
"""
from __future__ import annotations

from typing import Any

import keras

IMU_INPUT = "imu"
MODELS = ("cnn", "lstm")


def build_cnn(window: int, channels: int, n_classes: int, seed: int) -> keras.Model:
    """Four conv blocks and a global average: ~15 k weights, int8 under 32 KB. Only CONV_2D, MAX_POOL_2D,
    MEAN, FULLY_CONNECTED, SOFTMAX after conversion (what TFLite-Micro and the C kernels run)."""
    init = keras.initializers.GlorotUniform(seed=seed)
    x = inp = keras.Input(shape=(window, channels), name=IMU_INPUT)
    for i, (filters, kernel) in enumerate(((16, 7), (32, 5), (32, 5), (64, 3))):
        x = keras.layers.Conv1D(filters, kernel, padding="same", activation="relu", kernel_initializer=init,
                                name=f"conv{i}")(x)
        if i < 3:
            x = keras.layers.MaxPooling1D(2, name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    x = keras.layers.Dropout(0.3, seed=seed, name="dropout")(x)
    out = keras.layers.Dense(n_classes, activation="softmax", kernel_initializer=init, name="probs")(x)
    return keras.Model(inp, out, name="har_cnn")


def build_lstm(window: int, channels: int, n_classes: int, seed: int, units: int = 32) -> keras.Model:
    """Two conv layers shorten the sequence 4x (128 -> 32 steps); an LSTM reads it; its last state classifies."""
    init = keras.initializers.GlorotUniform(seed=seed)
    x = inp = keras.Input(shape=(window, channels), name=IMU_INPUT)
    for i, filters in enumerate((16, 32)):
        x = keras.layers.Conv1D(filters, 5, padding="same", activation="relu", kernel_initializer=init,
                                name=f"conv{i}")(x)
        x = keras.layers.MaxPooling1D(2, name=f"pool{i}")(x)
    x = keras.layers.LSTM(units, kernel_initializer=init, recurrent_initializer=keras.initializers.Orthogonal(
        seed=seed), name="lstm")(x)
    x = keras.layers.Dropout(0.2, seed=seed, name="dropout")(x)
    out = keras.layers.Dense(n_classes, activation="softmax", kernel_initializer=init, name="probs")(x)
    return keras.Model(inp, out, name="har_lstm")


def build(kind: str, window: int, channels: int, n_classes: int, seed: int) -> keras.Model:
    if kind == "cnn":
        return build_cnn(window, channels, n_classes, seed)
    if kind == "lstm":
        return build_lstm(window, channels, n_classes, seed)
    raise ValueError(f"HAR model {kind!r} unknown; choose one of {MODELS}")


def has_lstm(model: keras.Model) -> bool:
    return any(layer.__class__.__name__ == "LSTM" for layer in model.layers)


def tf_keras_twin(model: keras.Model) -> Any:
    """The same network in ``tf_keras`` with batch 1 and the trained weights: what TFLite fuses into
    ``UNIDIRECTIONAL_SEQUENCE_LSTM``. Supports the layer types ``build_lstm`` and ``build_cnn`` use."""
    import tf_keras

    inp = model.inputs[0]
    x = twin_in = tf_keras.Input(shape=tuple(inp.shape[1:]), batch_size=1, name=IMU_INPUT)
    layers = tf_keras.layers
    for layer in model.layers[1:]:
        cfg = layer.get_config()
        kind = layer.__class__.__name__
        if kind == "Conv1D":
            twin = layers.Conv1D(cfg["filters"], cfg["kernel_size"], padding=cfg["padding"],
                                 activation=cfg["activation"], name=layer.name)
        elif kind == "MaxPooling1D":
            twin = layers.MaxPooling1D(cfg["pool_size"], name=layer.name)
        elif kind == "GlobalAveragePooling1D":
            twin = layers.GlobalAveragePooling1D(name=layer.name)
        elif kind == "LSTM":
            twin = layers.LSTM(cfg["units"], name=layer.name)
        elif kind == "Dropout":
            continue  # identity at inference
        elif kind == "Dense":
            twin = layers.Dense(cfg["units"], activation=cfg["activation"], name=layer.name)
        else:
            raise ValueError(f"layer {layer.name!r} ({kind}) has no tf_keras twin; extend tf_keras_twin")
        x = twin(x)
        twin.set_weights(layer.get_weights())
    return tf_keras.Model(twin_in, x, name=f"{model.name}_tflite")
