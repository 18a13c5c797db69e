"""What a HAR flatbuffer really holds: its ops, and whether the LSTM is TFLite's fused op in int8.

"Converts to int8" is checked on the bytes, not assumed from the converter settings: ``op_report`` lists the
builtin ops and, for every ``UNIDIRECTIONAL_SEQUENCE_LSTM``, the types of its input, weights and output. A
model that still holds float ops (``DEQUANTIZE``/float LSTM weights: a hybrid or float fallback) or control flow
(``WHILE``: the unfused Keras 3 loop) is reported as such.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np

from training.codegen.reader import ModelFormatError, read_graph
from training.tasks.har_models import has_lstm, tf_keras_twin

FUSED_LSTM = "UNIDIRECTIONAL_SEQUENCE_LSTM"
#: Inputs of the fused LSTM op: 0 the sequence, 1-4 input-to-gate weights, 5-8 recurrent weights, 19 the cell
#: state (int16 in the integer kernel).
_LSTM_INPUT, _LSTM_WEIGHTS, _LSTM_CELL = 0, range(1, 9), 19


def op_report(blob: bytes) -> dict[str, Any]:
    """``ops`` (sorted builtin names), ``fused_lstm``, ``lstm_types`` (input / weights / output / cell-state
    dtypes), ``float_tensors`` (float32 activations: 0 in a fully int8 model), ``bytes``."""
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
                 "output": np.dtype(t[lstm.outputs[0]].dtype).name,
                 "cell_state": np.dtype(t[lstm.inputs[_LSTM_CELL]].dtype).name}
    # zero-size float "intermediate" tensors of the integer LSTM only name its gate scales: not activations
    floats = sum(1 for t in graph.tensors if np.dtype(t.dtype) == np.float32 and t.data is None
                 and int(np.prod(t.shape)) != 0)
    return {"ops": ops, "fused_lstm": lstm is not None, "lstm_types": types, "float_tensors": floats,
            "bytes": len(blob)}


def converter_model(model: keras.Model) -> Any:
    """What to hand ``tf.lite.TFLiteConverter.from_keras_model``: the ``tf_keras`` twin for a model with an
    LSTM (fused ``UNIDIRECTIONAL_SEQUENCE_LSTM``), the Keras 3 model itself otherwise. Pass it to
    ``training.tasks.export.export_task`` as ``dataclasses.replace(trained, model=converter_model(trained.model))``."""
    return tf_keras_twin(model) if has_lstm(model) else model
