"""The edge-side preprocessing contract of a task: what a device must feed a task's model.

It is written into every exported model's metadata (``ModelMetadata.extra["task"]``) by ``training`` and read
back by the device, which refuses a model whose contract its source cannot meet (wrong channel count, wrong
rate). It lives in ``edge_runtime`` because the device side must read it without TensorFlow.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: What a task's model consumes on the device.
SOURCES = ("ecg", "beats", "rpeaks", "imu", "tabular")


@dataclass(frozen=True)
class EdgeContract:
    task: str
    #: "ecg" (raw samples), "beats" (the beat stream's windows and RR features), "rpeaks" (R-peak times and
    #: labels), "imu" (accelerometer + gyroscope samples) or "tabular" (one record of named features).
    source: str
    #: Channel (or feature) names, in the order the model expects them.
    channels: tuple[str, ...]
    #: Sample rate the model was trained at (None for tabular and event streams).
    sample_rate_hz: float | None
    #: Rows of the source per model input (samples, beats or events); None for one-record inputs.
    window: int | None
    #: Task-specific constants the device applies before inference (scaling means/stds, hop, thresholds...).
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} unknown; one of {SOURCES}")
        if not self.channels:
            raise ValueError("a contract names at least one channel")
        if self.sample_rate_hz is not None and not (math.isfinite(self.sample_rate_hz) and self.sample_rate_hz > 0):
            raise ValueError(f"sample_rate_hz must be positive, got {self.sample_rate_hz}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")

    def check_source(self, channels: int, sample_rate_hz: float | None) -> None:
        """Raise ``ValueError`` saying what to change when a source cannot feed this model."""
        if channels != len(self.channels):
            raise ValueError(f"task {self.task!r} needs {len(self.channels)} channels ({', '.join(self.channels)}); "
                             f"the source gives {channels}")
        if self.sample_rate_hz is not None and sample_rate_hz is not None \
                and not math.isclose(sample_rate_hz, self.sample_rate_hz, rel_tol=1e-3):
            raise ValueError(f"task {self.task!r} was trained at {self.sample_rate_hz:g} Hz; the source gives "
                             f"{sample_rate_hz:g} Hz (resample it or give the right --fs)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "EdgeContract":
        try:
            return cls(task=str(raw["task"]), source=str(raw["source"]),
                       channels=tuple(str(c) for c in raw["channels"]),
                       sample_rate_hz=None if raw.get("sample_rate_hz") is None else float(raw["sample_rate_hz"]),
                       window=None if raw.get("window") is None else int(raw["window"]),
                       preprocessing=dict(raw.get("preprocessing") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"model metadata has a malformed task contract: {exc}") from exc
