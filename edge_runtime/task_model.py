"""Any task's exported model as a device runs it: a .tflite, its metadata and the task contract inside it.

Inputs are given by the names the task's model uses (``TaskSplit.inputs``' keys) and matched to the
interpreter's tensors by name, so the converter's input order does not matter; int8 models get their inputs
quantized and their outputs dequantized here, one row at a time as on the device. The beat classifier keeps
its own ``BeatClassifier`` (RR scaling, the beat stream); this is what the other tasks' edge code builds on.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from edge_runtime.classifier import ModelMismatch
from edge_runtime.int8_io import dequantize, port_of, quantize
from edge_runtime.interpreter import make_interpreter
from edge_runtime.model_metadata import ModelMetadata, metadata_path_for
from edge_runtime.task_contract import EdgeContract


def _input_name(tensor_name: str) -> str:
    """"serving_default_wave:0" -> "wave"."""
    return re.sub(r":\d+$", "", tensor_name).removeprefix("serving_default_")


class TaskInterpreter:
    """Runs a task model on rows of named inputs; ``contract`` is the task's ``EdgeContract`` from the metadata."""

    def __init__(self, model_content: bytes, metadata: ModelMetadata, reference_kernels: bool = True) -> None:
        digest = hashlib.sha256(model_content).hexdigest()
        if metadata.model_sha256 and digest != metadata.model_sha256:
            raise ModelMismatch(f"model hash {digest[:12]} differs from its metadata's {metadata.model_sha256[:12]}")
        if "task" not in metadata.extra:
            raise ModelMismatch("the model's metadata carries no task contract (extra['task']): export it with "
                                "`pulsewire export --task NAME`")
        self.metadata = metadata
        self.contract = EdgeContract.from_dict(metadata.extra["task"])
        self._interp = make_interpreter(model_content, reference_kernels=reference_kernels)
        details = self._interp.get_input_details()
        self._inputs = {_input_name(d["name"]): (port_of(d), tuple(int(s) for s in d["shape"])) for d in details}
        if len(self._inputs) != len(details):
            raise ModelMismatch(f"input tensor names are not distinct: {[d['name'] for d in details]}")
        outputs = self._interp.get_output_details()
        if len(outputs) != 1:
            raise ModelMismatch(f"expected one output tensor, got {len(outputs)}")
        self._out, self._out_shape = port_of(outputs[0]), tuple(int(s) for s in outputs[0]["shape"])

    @classmethod
    def from_file(cls, model_path: Path, reference_kernels: bool = True) -> "TaskInterpreter":
        model_path = Path(model_path)
        return cls(model_path.read_bytes(), ModelMetadata.load(metadata_path_for(model_path)), reference_kernels)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self._inputs)

    def _match(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(self._inputs) == 1 and len(inputs) == 1:
            return {next(iter(self._inputs)): next(iter(inputs.values()))}
        missing = set(self._inputs) - set(inputs)
        if missing:
            raise ValueError(f"task {self.contract.task!r} needs inputs {sorted(self._inputs)}; missing {sorted(missing)}")
        return {k: inputs[k] for k in self._inputs}

    def predict(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Dequantized outputs, one row per input row (NaN/Inf or a wrong row shape: ``ValueError``)."""
        arrays = {k: np.asarray(v, np.float32) for k, v in self._match(inputs).items()}
        n = {len(a) for a in arrays.values()}
        if len(n) != 1:
            raise ValueError(f"inputs need the same number of rows, got { {k: len(a) for k, a in arrays.items()} }")
        for name, a in arrays.items():
            want = self._inputs[name][1][1:]
            if a.shape[1:] != want:
                raise ValueError(f"input {name!r} rows must have shape {want}, got {a.shape[1:]}")
            if not np.isfinite(a).all():
                raise ValueError(f"input {name!r} holds NaN or infinite values")
        rows = n.pop()
        out = np.empty((rows, *self._out_shape[1:]), np.float32)
        for i in range(rows):  # batch 1, as on the device
            for name, a in arrays.items():
                port = self._inputs[name][0]
                self._interp.set_tensor(port.index, quantize(a[i:i + 1], port))
            self._interp.invoke()
            out[i] = dequantize(self._interp.get_tensor(self._out.index), self._out)[0]
        return out
