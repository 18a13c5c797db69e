"""A small, typed view of an int8 ``.tflite`` flatbuffer: tensors (shape, type, quantization, constant
data) and operators (builtin name, inputs, outputs, options), read with the schema that LiteRT ships
(``ai_edge_litert.schema_py_generated`` + ``flatbuffers``), so the generator needs no TensorFlow."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

_TYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}


class ModelFormatError(ValueError):
    """The bytes are not a single-subgraph TFLite model this generator can read."""


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: Any
    scale: np.ndarray          # float32, one per channel or one per tensor; empty if not quantized
    zero_point: np.ndarray     # int64
    quantized_dim: int
    data: np.ndarray | None    # constant tensors only

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass
class Operator:
    index: int
    name: str                  # builtin name, e.g. "CONV_2D"
    inputs: list[int]          # tensor indices; -1 = optional input left out
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _options(op_t) -> dict[str, Any]:
    if op_t.builtinOptions is None:
        return {}
    return {k: v for k, v in vars(op_t.builtinOptions).items() if not k.startswith("_")}


def read_graph(model: bytes) -> Graph:
    schema = _schema()
    try:
        m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model, 0))
    except Exception as exc:  # the flatbuffers reader raises anything on garbage
        raise ModelFormatError(f"not a TFLite flatbuffer ({type(exc).__name__}: {exc})") from exc
    if not m.subgraphs or len(m.subgraphs) != 1:
        raise ModelFormatError(f"expected one subgraph, found {len(m.subgraphs or [])} "
                               "(control flow is not supported on the microcontroller)")
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    g = m.subgraphs[0]
    tensors = []
    for i, t in enumerate(g.tensors):
        if t.type not in _TYPES:
            raise ModelFormatError(f"tensor {i} ({t.name!r}) has TFLite type {t.type}, not one of int8/int32/"
                                   "uint8/int16/int64/float32")
        q = t.quantization
        scale = np.asarray(q.scale if q is not None and q.scale is not None else [], np.float32)
        zp = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], np.int64)
        buf = m.buffers[t.buffer] if t.buffer < len(m.buffers) else None
        data = None
        if buf is not None and buf.data is not None and len(buf.data):
            data = np.frombuffer(bytes(bytearray(buf.data)), dtype=_TYPES[t.type]).reshape(
                tuple(int(d) for d in t.shape) if t.shape is not None else ())
        elif buf is not None and getattr(buf, "offset", 0):
            data = np.frombuffer(model[buf.offset:buf.offset + buf.size], dtype=_TYPES[t.type]).reshape(
                tuple(int(d) for d in t.shape))
        tensors.append(Tensor(i, (t.name or b"").decode() if isinstance(t.name, bytes) else str(t.name or ""),
                              tuple(int(d) for d in (t.shape if t.shape is not None else [])), _TYPES[t.type],
                              scale, zp, int(q.quantizedDimension) if q is not None else 0, data))
    ops = []
    for i, op in enumerate(g.operators):
        code = m.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = names.get(builtin, f"builtin {builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM ({code.customCode!r})"
        ops.append(Operator(i, name, [int(x) for x in op.inputs], [int(x) for x in op.outputs], _options(op)))
    return Graph(tensors, ops, [int(x) for x in g.inputs], [int(x) for x in g.outputs])
