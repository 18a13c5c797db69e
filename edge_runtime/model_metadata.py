"""The sidecar JSON that travels with every .tflite: what the model expects and where it came from.

A device refuses a model whose metadata does not match its input pipeline; this file is the contract.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.signal_config import SignalConfig
from edge_runtime.template_features import FEATURE_SETS

METADATA_FORMAT = 1


@dataclass(frozen=True)
class TensorQuant:
    """Affine int8 quantization of one model input or output: real = scale * (q - zero_point)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    @classmethod
    def from_detail(cls, detail: dict) -> "TensorQuant":
        """From a TFLite interpreter's input/output detail dict (float tensors have scale 0)."""
        scale, zero_point = detail.get("quantization", (0.0, 0))
        return cls(name=str(detail["name"]), shape=tuple(int(d) for d in detail["shape"]),
                   dtype=np.dtype(detail["dtype"]).name, scale=float(scale), zero_point=int(zero_point))


@dataclass(frozen=True)
class ModelMetadata:
    model_version: str
    class_names: tuple[str, ...]
    signal: SignalConfig
    rr_feature_names: tuple[str, ...]
    rr_mean: tuple[float, ...]
    rr_std: tuple[float, ...]
    quantization: str  # "float32" or "int8"
    inputs: tuple[TensorQuant, ...]
    outputs: tuple[TensorQuant, ...]
    training_config_hash: str
    model_sha256: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.rr_mean) != len(self.rr_feature_names) or len(self.rr_std) != len(self.rr_feature_names):
            raise ValueError("rr_mean and rr_std need one value per RR feature")
        if any(s <= 0 for s in self.rr_std):
            raise ValueError("rr_std values must be positive")
        if tuple(self.rr_feature_names) not in FEATURE_SETS.values():
            raise ValueError(f"model expects RR features {self.rr_feature_names}, this runtime computes one of "
                             f"{sorted(FEATURE_SETS.values())}; update the runtime or re-export the model")

    def to_json(self) -> str:
        data = asdict(self)
        data["format"] = METADATA_FORMAT
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelMetadata":
        data = json.loads(text)
        fmt = data.pop("format", None)
        if fmt != METADATA_FORMAT:
            raise ValueError(f"model metadata format {fmt!r} is not supported (expected {METADATA_FORMAT})")
        data["signal"] = SignalConfig.from_dict(data["signal"])
        for key in ("inputs", "outputs"):
            data[key] = tuple(TensorQuant(**{**t, "shape": tuple(t["shape"])}) for t in data[key])
        for key in ("class_names", "rr_feature_names", "rr_mean", "rr_std"):
            data[key] = tuple(data[key])
        return cls(**data)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path) -> "ModelMetadata":
        try:
            return cls.from_json(Path(path).read_text())
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a pulsewire model metadata file ({exc})") from exc


def metadata_path_for(model_path: Path) -> Path:
    """``model.tflite`` -> ``model.json``: the sidecar lives beside the model."""
    return Path(model_path).with_suffix(".json")
