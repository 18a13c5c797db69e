"""The int8 form a microcontroller runs, and what its flatbuffer holds (ops, weight bytes, zeros).

The dense head is exported as 1x1 convolutions (RESHAPE -> CONV_2D -> CONV_2D -> RESHAPE -> SOFTMAX): the
same parameters and float function, but the int8 arithmetic of CONV_2D is the one kernel that TFLite-Micro
and LiteRT's reference kernels requantize identically. Measured on the foundation's export (2,000 DS2
beats, tensor by tensor): TFLite-Micro's FULLY_CONNECTED requantizes with gemmlowp's double rounding
(rounding doubling high multiply, then a rounding shift that rounds ties away from zero), LiteRT's reference
FULLY_CONNECTED with a single rounding shift: they differed on 94 of 2,000 beats at the hidden layer. With a
1x1 CONV_2D head LiteRT's reference kernels (``OpResolverType.BUILTIN_REF``) and TFLite-Micro agreed on
every output byte. The price: ``edge_runtime.personalize`` looks for a FULLY_CONNECTED -> SOFTMAX head.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from training.model import RR_INPUT, WAVE_INPUT

#: Ops the firmware's C code generator implements (firmware issue): every variant must stay inside.
FIRMWARE_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN",
                          "CONCATENATION", "FULLY_CONNECTED", "SOFTMAX", "RESHAPE", "EXPAND_DIMS", "ADD",
                          "QUANTIZE"})
_WEIGHT_OPS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2)}


def conv_head(model: keras.Model) -> keras.Model:
    """``model`` (as ``build_classifier`` makes it) traced at batch size 1, with its Dense layers as 1x1
    Conv1D: same weights, same float outputs; the converter emits CONV_2D for them, and the static batch
    lets the reshapes fold to constants. Shares the feature layers (and their weights) with ``model``."""
    wave = keras.Input(batch_shape=(1, *model.get_layer(WAVE_INPUT).output.shape[1:]), name=WAVE_INPUT)
    rr = keras.Input(batch_shape=(1, *model.get_layer(RR_INPUT).output.shape[1:]), name=RR_INPUT)
    x, i = wave, 0
    while any(layer.name == f"conv{i}" for layer in model.layers):
        x = model.get_layer(f"conv{i}")(x)
        if any(layer.name == f"pool{i}" for layer in model.layers):
            x = model.get_layer(f"pool{i}")(x)
        i += 1
    x = model.get_layer("join")([model.get_layer("gap")(x), rr])
    dense, probs = model.get_layer("dense"), model.get_layer("probs")
    hidden = keras.layers.Conv1D(dense.units, 1, activation="relu", name="dense_1x1")
    logits = keras.layers.Conv1D(probs.units, 1, name="probs_1x1")
    x = logits(hidden(keras.layers.Reshape((1, x.shape[-1]), name="join_1x1")(x)))
    x = keras.layers.Softmax(name="softmax")(keras.layers.Reshape((probs.units,), name="logits")(x))
    twin = keras.Model([wave, rr], x, name=model.name + "_conv_head")
    for src, dst in ((dense, hidden), (probs, logits)):
        kernel, bias = src.get_weights()
        dst.set_weights([kernel[None], bias])
    return twin


@dataclass(frozen=True)
class FlatbufferFacts:
    """What an int8 .tflite holds: its ops, the bytes of its weight tensors (filters and biases of the
    weighted ops: what would go to flash as arrays) and all constant bytes, and how many weights are 0."""

    ops: tuple[str, ...]
    file_bytes: int
    weight_bytes: int
    constant_bytes: int
    weights: int
    zero_weights: int

    @property
    def unsupported_ops(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.ops) - FIRMWARE_OPS))

    def to_dict(self) -> dict:
        return {"ops": list(self.ops), "file_bytes": self.file_bytes, "weight_bytes": self.weight_bytes,
                "constant_bytes": self.constant_bytes, "weights": self.weights, "zero_weights": self.zero_weights,
                "weight_sparsity": self.zero_weights / self.weights if self.weights else 0.0,
                "ops_outside_firmware_set": list(self.unsupported_ops)}


def flatbuffer_facts(blob: bytes) -> FlatbufferFacts:
    """Parse the flatbuffer (TFLite-Micro's schema module) rather than trust the Keras side."""
    from tflite_micro.python.tflite_micro import runtime
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = runtime.convert_bytearray_to_object(bytearray(blob))
    graph = model.subgraphs[0]
    ops, weight_tensors = [], set()
    for op in graph.operators:
        name = names[runtime.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])]
        ops.append(name)
        for pos in _WEIGHT_OPS.get(name, ()):
            if pos < len(op.inputs) and op.inputs[pos] >= 0:
                weight_tensors.add(int(op.inputs[pos]))

    def data(tensor_index: int) -> np.ndarray | None:
        buf = model.buffers[graph.tensors[tensor_index].buffer]
        return None if buf.data is None else np.asarray(buf.data, np.uint8)

    constant = sum(len(b.data) for b in model.buffers if b.data is not None)
    weight_bytes = weights = zeros = 0
    for t in weight_tensors:
        raw = data(t)
        if raw is None:
            continue
        weight_bytes += raw.size
        if graph.tensors[t].type == schema.TensorType.INT8:  # filters; biases are int32
            weights += raw.size
            zeros += int(np.count_nonzero(raw == 0))
    return FlatbufferFacts(tuple(ops), len(blob), weight_bytes, constant, weights, zeros)
