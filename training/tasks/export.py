"""Export a task's model to float32 / int8 TFLite with the sidecar metadata a device checks.

The conversion and the sidecar are ``training.export``'s (the beat classifier's exporter); what a task adds is
its calibration rows (``task.representative``) and its edge contract in ``metadata.extra["task"]``. The
metadata's beat-specific fields come from the contract's preprocessing when it has them ("signal", "rr_mean",
"rr_std": the beat task) and are neutral otherwise (default signal, identity RR scaling), so the device reads
what a non-beat model needs from ``extra["task"]`` alone.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from edge_runtime.signal_config import RR_FEATURE_NAMES, SignalConfig
from training.export import QUANTIZATIONS, ExportedModel, convert_keras, write_exported
from training.tasks.base import TaskSplit
from training.tasks.fit import TaskModel


def _beat_fields(preprocessing: dict) -> dict:
    names = tuple(preprocessing.get("rr_feature_names", RR_FEATURE_NAMES))
    n = len(names)
    signal = preprocessing.get("signal")
    return {"signal": SignalConfig.from_dict(signal) if signal else SignalConfig(),
            "rr_feature_names": names,
            "rr_mean": tuple(float(v) for v in preprocessing.get("rr_mean", [0.0] * n)),
            "rr_std": tuple(float(v) for v in preprocessing.get("rr_std", [1.0] * n))}


def export_task(trained: TaskModel, train: TaskSplit, out_dir: Path, quantization: str = "int8", seed: int = 0,
                model_version: str | None = None, calibration_rows: int = 500) -> ExportedModel:
    """Write ``<out_dir>/<task>_<quantization>.tflite`` and its ``.json``; int8 calibrates on
    ``task.representative(train, calibration_rows, seed)`` (training rows only)."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    task, model = trained.task, trained.model
    contract = task.edge_contract(train).to_dict()
    representative = None
    if quantization == "int8":
        rows = task.representative(train, calibration_rows, seed)
        names = [t.name for t in model.inputs]
        missing = set(names) - set(rows)
        if missing:
            raise ValueError(f"task {task.name!r}: representative rows lack model inputs {sorted(missing)}")
        arrays = [np.asarray(rows[n], np.float32) for n in names]

        def representative():
            for i in range(len(arrays[0])):
                yield [a[i:i + 1] for a in arrays]

    blob = convert_keras(task.converter_model(model), quantization, representative)
    digest = hashlib.sha256(json.dumps({"task": task.name, "contract": contract}, sort_keys=True,
                                       default=str).encode()).hexdigest()[:12]
    version = model_version or f"{task.name}-{digest}"
    extra = {"task": contract, "best_epoch": trained.best_epoch}
    return write_exported(blob, Path(out_dir) / f"{task.name}_{quantization}.tflite", quantization, version,
                          class_names=tuple(task.class_names), training_config_hash=digest, extra=extra,
                          **_beat_fields(contract.get("preprocessing", {})))
