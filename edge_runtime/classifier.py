"""The beat classifier as a device runs it: a .tflite plus its metadata, one beat at a time."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edge_runtime.int8_io import dequantize, port_of, quantize
from edge_runtime.interpreter import make_interpreter
from edge_runtime.model_metadata import ModelMetadata, metadata_path_for
from edge_runtime.rr_features import standardise_rr
from edge_runtime.template_features import FIXED_FEATURE_NAMES
from edge_runtime.template_fixed import quantize_fixed_columns


class ModelMismatch(ValueError):
    """The .tflite does not match its metadata (or the runtime): refuse it instead of guessing."""


class BeatClassifier:
    """Scores beats with a float32 or int8 TFLite model; inputs are unscaled pipeline outputs.

    The wave input is recognised by rank 3 ``(1, window, 1)``, RR features by rank 2 ``(1, n_rr)``,
    so the converter's input order and tensor names do not matter.
    """

    def __init__(self, model_content: bytes, metadata: ModelMetadata, reference_kernels: bool = True) -> None:
        digest = hashlib.sha256(model_content).hexdigest()
        if metadata.model_sha256 and digest != metadata.model_sha256:
            raise ModelMismatch(f"model hash {digest[:12]} differs from its metadata's "
                                f"{metadata.model_sha256[:12]}: the sidecar belongs to another model")
        self.metadata = metadata
        self._interp = make_interpreter(model_content, reference_kernels=reference_kernels)
        inputs = self._interp.get_input_details()
        by_rank = {len(d["shape"]): d for d in inputs}
        if len(inputs) != 2 or set(by_rank) != {2, 3}:
            raise ModelMismatch(f"expected a wave input (rank 3) and an RR input (rank 2), got "
                                f"{[tuple(d['shape']) for d in inputs]}")
        window = metadata.signal.window_length
        if tuple(by_rank[3]["shape"]) != (1, window, 1):
            raise ModelMismatch(f"wave input shape {tuple(by_rank[3]['shape'])} != (1, {window}, 1) from metadata")
        if tuple(by_rank[2]["shape"]) != (1, len(metadata.rr_feature_names)):
            raise ModelMismatch(f"RR input shape {tuple(by_rank[2]['shape'])} does not match "
                                f"{len(metadata.rr_feature_names)} RR features")
        outputs = self._interp.get_output_details()
        if len(outputs) != 1 or tuple(outputs[0]["shape"]) != (1, len(metadata.class_names)):
            raise ModelMismatch(f"expected one output of shape (1, {len(metadata.class_names)})")
        self._wave, self._rr, self._out = port_of(by_rank[3]), port_of(by_rank[2]), port_of(outputs[0])
        self._rr_mean = np.asarray(metadata.rr_mean, np.float32)
        self._rr_std = np.asarray(metadata.rr_std, np.float32)
        self._fixed = [i for i, name in enumerate(metadata.rr_feature_names) if name in FIXED_FEATURE_NAMES]

    @classmethod
    def from_file(cls, model_path: Path, metadata_path: Path | None = None,
                  reference_kernels: bool = True) -> BeatClassifier:
        model_path = Path(model_path)
        meta = ModelMetadata.load(metadata_path or metadata_path_for(model_path))
        return cls(model_path.read_bytes(), meta, reference_kernels=reference_kernels)

    @property
    def input_dtype(self) -> np.dtype:
        return self._wave.dtype

    def quantize_inputs(self, waves: np.ndarray, rr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The exact tensors fed to the interpreter (int8 for int8 models): for golden C test vectors."""
        rr_z = standardise_rr(rr, self._rr_mean, self._rr_std)
        qr = quantize(rr_z, self._rr)
        if self._fixed and self._rr.dtype == np.int8:  # integer-defined features: quantized as the C does
            qr = quantize_fixed_columns(np.asarray(rr, np.float32), qr, self._fixed, self._rr_mean, self._rr_std,
                                        self._rr.scale, self._rr.zero_point)
        return quantize(np.asarray(waves, np.float32), self._wave), qr

    def raw_outputs(self, waves: np.ndarray, rr: np.ndarray) -> np.ndarray:
        """Output tensors as the interpreter wrote them (int8 for int8 models), one row per beat."""
        waves = np.asarray(waves, np.float32)
        rr = np.asarray(rr, np.float32)
        if waves.ndim != 2 or rr.ndim != 2 or waves.shape[0] != rr.shape[0]:
            raise ValueError(f"need waves (n, window) and rr (n, features), got {waves.shape} and {rr.shape}")
        qw, qr = self.quantize_inputs(waves, rr)
        out = np.empty((waves.shape[0], len(self.metadata.class_names)), dtype=self._out.dtype)
        for i in range(waves.shape[0]):  # batch 1, as on the device
            self._interp.set_tensor(self._wave.index, qw[i][None, :, None])
            self._interp.set_tensor(self._rr.index, qr[i][None, :])
            self._interp.invoke()
            out[i] = self._interp.get_tensor(self._out.index)[0]
        return out

    def predict_proba(self, waves: np.ndarray, rr: np.ndarray) -> np.ndarray:
        """Class probabilities (dequantized softmax), shape (n, n_classes)."""
        return dequantize(self.raw_outputs(waves, rr), self._out)

    def predict(self, waves: np.ndarray, rr: np.ndarray) -> np.ndarray:
        return np.argmax(self.raw_outputs(waves, rr), axis=1)
