"""What a HAR flatbuffer really holds: its ops, and whether the LSTM is TFLite's fused op in int8.

"Converts to int8" is checked on the bytes, not assumed from the converter settings: ``op_report`` lists the
builtin ops and, for every ``UNIDIRECTIONAL_SEQUENCE_LSTM``, the types of its input, weights and output. A
model that still holds float ops (``DEQUANTIZE``/float LSTM weights: a hybrid or float fallback) or control flow
(``WHILE``: the unfused Keras 3 loop) is reported as such.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from training.codegen.reader import ModelFormatError, read_graph
from training.tasks.har_models import has_lstm, tf_keras_twin

FUSED_LSTM = "UNIDIRECTIONAL_SEQUENCE_LSTM"
#: Inputs of the fused LSTM op: 0 the sequence, 1-4 input-to-gate weights, 5-8 recurrent weights.
_LSTM_INPUT, _LSTM_WEIGHTS = 0, range(1, 9)


def op_report(blob: bytes) -> dict[str, Any]:
    """``ops`` (sorted builtin names), ``fused_lstm``, ``lstm_types`` (input / weights / output dtypes),
    ``float_tensors`` (non-constant float32 tensors: 0 in a fully int8 model), ``bytes``."""
    try:
        graph = read_graph(blob)
    except ModelFormatError as exc:  # several subgraphs: WHILE loops, i.e. an unfused recurrent layer
        return {"ops": [], "fused_lstm": False, "lstm_types": None, "float_tensors": None, "bytes": len(blob),
                "note": str(exc)}
    ops = sorted({op.name for op in graph.operators})
    lstm = next((op for op in graph.operators if op.name == FUSED_LSTM), None)
    types = None
    if lstm is not None:
        t = graph.tensors
        types = {"input": np.dtype(t[lstm.inputs[_LSTM_INPUT]].dtype).name,
                 "weights": sorted({np.dtype(t[i].dtype).name for i in (lstm.inputs[k] for k in _LSTM_WEIGHTS)
                                    if i >= 0}),
                 "output": np.dtype(t[lstm.outputs[0]].dtype).name}
    floats = sum(1 for t in graph.tensors if np.dtype(t.dtype) == np.float32 and t.data is None)
    return {"ops": ops, "fused_lstm": lstm is not None, "lstm_types": types, "float_tensors": floats,
            "bytes": len(blob)}


def convert_lstm(model: keras.Model, representative: np.ndarray | None, quantization: str) -> bytes:
    """Flatbuffer of a model with an LSTM through its ``tf_keras`` twin (batch 1): float32, "int8" (int8 ops,
    inputs and outputs only: fails rather than falling back) or "int8-fallback" (int8 where possible, float
    kernels elsewhere, float input/output) — the last is what to try when "int8" fails."""
    import tensorflow as tf

    if not has_lstm(model):
        raise ValueError(f"{model.name} has no LSTM: export it with training.tasks.export")
    converter = tf.lite.TFLiteConverter.from_keras_model(tf_keras_twin(model))
    if quantization != "float32":
        if representative is None or not len(representative):
            raise ValueError("int8 export needs representative windows")

        def rows() -> Iterator[list[np.ndarray]]:
            for i in range(len(representative)):
                yield [representative[i:i + 1].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = rows
        if quantization == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        elif quantization != "int8-fallback":
            raise ValueError(f"quantization {quantization!r}: use float32, int8 or int8-fallback")
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()
