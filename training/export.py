"""TFLite export (float32 and full-integer int8) with the metadata sidecar a device checks."""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from edge_runtime.aami import AAMI_CLASSES
from edge_runtime.interpreter import make_interpreter
from edge_runtime.model_metadata import ModelMetadata, TensorQuant, metadata_path_for
from edge_runtime.template_features import feature_set_named
from training.data.beat_dataset import BeatDataset
from training.train import TrainedModel

log = logging.getLogger(__name__)
QUANTIZATIONS = ("float32", "int8")


@dataclass(frozen=True)
class ExportedModel:
    tflite_path: Path
    metadata: ModelMetadata

    @property
    def size_bytes(self) -> int:
        return self.tflite_path.stat().st_size


def representative_beats(data: BeatDataset, n: int, seed: int) -> np.ndarray:
    """Calibration rows for int8: random beats plus every rare-class beat up to a share of ``n``.

    Calibration only sets activation ranges; ectopic beats (large, wide V complexes) have the extreme
    values, so a random draw of mostly N beats would clip them.
    """
    rng = np.random.default_rng(seed)
    rare = np.flatnonzero(data.labels != AAMI_CLASSES.index("N"))
    rare = rng.choice(rare, size=min(rare.size, n // 2), replace=False)
    common = rng.choice(len(data), size=min(len(data), n - rare.size), replace=False)
    return np.unique(np.concatenate([rare, common]))


def convert_keras(model: keras.Model, quantization: str,
                  representative: Callable[[], Iterable[list[np.ndarray]]] | None = None) -> bytes:
    """Flatbuffer bytes of any Keras model; int8 means int8 weights, activations, inputs and outputs (no float
    ops), calibrated on ``representative()``'s batch-1 rows (one array per model input, in ``model.inputs``
    order)."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "int8":
        if representative is None:
            raise ValueError("int8 export needs calibration rows (representative training data)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the whole traced signature on export
        return converter.convert()


def convert(trained: TrainedModel, quantization: str, calibration: BeatDataset | None = None) -> bytes:
    """The beat classifier's flatbuffer; int8 calibrates on ``calibration`` beats."""
    representative = None
    if quantization == "int8":
        if calibration is None or len(calibration) == 0:
            raise ValueError("int8 export needs calibration beats (representative training data)")
        waves = calibration.waves[..., None].astype(np.float32)
        rr = trained.rr_scaler(calibration.rr)

        def representative():
            for i in range(len(calibration)):
                yield [waves[i:i + 1], rr[i:i + 1]]

    return convert_keras(trained.model, quantization, representative)


def write_exported(blob: bytes, out_path: Path, quantization: str, model_version: str, **fields: Any
                   ) -> ExportedModel:
    """Write the flatbuffer and its ``.json`` sidecar (``fields``: the metadata that depends on the model's task:
    class names, signal, RR scaling, training-config hash, extra); returns both."""
    interp = make_interpreter(blob)
    meta = ModelMetadata(
        model_version=model_version, quantization=quantization,
        inputs=tuple(TensorQuant.from_detail(d) for d in interp.get_input_details()),
        outputs=tuple(TensorQuant.from_detail(d) for d in interp.get_output_details()),
        model_sha256=hashlib.sha256(blob).hexdigest(), **fields)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(blob)
    meta.save(metadata_path_for(out_path))
    log.info("exported %s (%d bytes, %s)", out_path, len(blob), quantization)
    return ExportedModel(out_path, meta)


def export_model(trained: TrainedModel, out_path: Path, quantization: str, model_version: str,
                 calibration: BeatDataset | None = None, extra: dict | None = None) -> ExportedModel:
    """Write ``out_path`` (.tflite) and its ``.json`` sidecar; returns both."""
    return write_exported(
        convert(trained, quantization, calibration), out_path, quantization, model_version,
        class_names=AAMI_CLASSES, signal=trained.config.signal, rr_feature_names=feature_set_named(trained.config.features),
        rr_mean=tuple(float(v) for v in trained.rr_scaler.mean), rr_std=tuple(float(v) for v in trained.rr_scaler.std),
        training_config_hash=trained.config.digest(), extra=dict(extra or {}))
