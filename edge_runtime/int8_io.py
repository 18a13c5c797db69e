"""Quantized model inputs and outputs: a TFLite tensor's dtype, scale and zero point, and the conversions.

One module because every device-side runner (the beat classifier, any task's interpreter) feeds int8 models
the same way: quantize each input with its tensor's parameters, dequantize the output. float32 tensors pass
through unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Port:
    """One interpreter tensor: its index and quantization (scale 0 / zero point 0 for float32)."""

    index: int
    dtype: np.dtype
    scale: float
    zero_point: int


def port_of(detail: dict) -> Port:
    """The ``Port`` of one entry of ``get_input_details()`` / ``get_output_details()``."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return Port(detail["index"], np.dtype(detail["dtype"]), float(scale), int(zero_point))


def round_half_away(x: float) -> int:
    """std::round / TfLiteRound: halves go away from zero (Python's round() goes to even)."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def quantize(x: np.ndarray, port: Port) -> np.ndarray:
    """Real values -> the tensor's dtype (rounded and saturated for integer tensors)."""
    if port.dtype == np.float32:
        return x.astype(np.float32)
    info = np.iinfo(port.dtype)
    q = np.round(x / port.scale) + port.zero_point
    return np.clip(q, info.min, info.max).astype(port.dtype)


def dequantize(q: np.ndarray, port: Port) -> np.ndarray:
    """The tensor's values -> float32 real values."""
    if port.dtype == np.float32:
        return q.astype(np.float32)
    return (q.astype(np.float32) - port.zero_point) * port.scale
