"""The interpreters the generated C code is compared with, fed the exact int8 tensors the C code gets:

- ``litert_ref``: LiteRT with ``OpResolverType.BUILTIN_REF`` (TFLite's reference kernels);
- ``litert_builtin``: LiteRT with ``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` (its optimized kernels, no
  XNNPACK: what ``edge_runtime.classifier`` runs);
- ``tflm``: the TFLite-Micro interpreter (the ``tflite-micro`` package), what a Cortex-M would run.

Inputs are given in the graph's input order (``model_inputs``), one array (beats, *shape[1:]) each."""
from __future__ import annotations

import numpy as np

from training.codegen.reader import read_graph

BACKENDS = ("litert_ref", "litert_builtin", "tflm")


def model_io(model: bytes) -> tuple[list[tuple[int, tuple[int, ...]]], list[tuple[int, tuple[int, ...]]]]:
    """(tensor index, shape) of each graph input and output, in graph order."""
    g = read_graph(model)
    return ([(i, g.tensors[i].shape) for i in g.inputs], [(i, g.tensors[i].shape) for i in g.outputs])


def run_reference(model: bytes, inputs: list[np.ndarray], backend: str) -> list[np.ndarray]:
    """Outputs (graph order), each (beats, *shape[1:]) int8, batch 1 per invoke as on the device."""
    ins, outs = model_io(model)
    beats = len(inputs[0])
    results = [np.empty((beats,) + tuple(shape[1:]), np.int8) for _, shape in outs]
    if backend in ("litert_ref", "litert_builtin"):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = (OpResolverType.BUILTIN_REF if backend == "litert_ref"
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp = Interpreter(model_content=model, experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
        for b in range(beats):
            for (t, shape), x in zip(ins, inputs):
                interp.set_tensor(t, x[b].reshape(shape))
            interp.invoke()
            for k, (t, _) in enumerate(outs):
                results[k][b] = interp.get_tensor(t)[0]
        return results
    if backend == "tflm":
        from tflite_micro import runtime

        interp = runtime.Interpreter.from_bytes(model, arena_size=256 * 1024)
        for b in range(beats):
            for k, ((_, shape), x) in enumerate(zip(ins, inputs)):
                interp.set_input(x[b].reshape(shape), k)
            interp.invoke()
            for k in range(len(outs)):
                results[k][b] = interp.get_output(k)[0]
        return results
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
