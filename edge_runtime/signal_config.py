"""The input contract between a recorded ECG and the beat classifier."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

#: Order of the RR-interval features fed beside the waveform (see ``rr_features``).
RR_FEATURE_NAMES: tuple[str, ...] = (
    "pre_rr_s",
    "post_rr_s",
    "local_rr_s",
    "long_rr_s",
    "pre_over_local",
    "post_over_pre",
    "pre_over_long",
)


@dataclass(frozen=True)
class SignalConfig:
    """Everything that turns raw samples into model inputs; it is hashed into caches and model metadata.

    All filtering is causal (``sosfilt``, not ``filtfilt``) so that a streaming device reproduces the
    training inputs exactly; the filter's small group delay is learned like any other waveform trait.
    """

    fs_hz: float = 360.0
    band_low_hz: float = 0.5
    band_high_hz: float = 40.0
    filter_order: int = 2
    #: Samples kept before and after the R-peak at ``fs_hz`` (0.25 s before, 0.30 s after at 360 Hz).
    window_before: int = 90
    window_after: int = 110
    #: Keep every n-th sample of the window (40 Hz band edge is far below the decimated Nyquist).
    decimation: int = 2
    #: "rpeak_median": divide each window by the median |R amplitude| of the last beats (patient gain
    #: varies 5x across MIT-BIH and on real electrodes); "none": keep millivolts.
    amplitude_normalisation: str = "rpeak_median"
    amplitude_beats: int = 8
    #: Windows are clipped to +-wave_clip (in R amplitudes): artefacts of 30x would otherwise set the
    #: int8 input scale and leave real beats a handful of quantization levels.
    wave_clip: float = 4.0
    #: Beats in the local and long RR averages (causal: only beats before the current one).
    rr_local_beats: int = 10
    rr_long_beats: int = 300

    def __post_init__(self) -> None:
        if self.fs_hz <= 0:
            raise ValueError(f"fs_hz must be positive, got {self.fs_hz}")
        if not 0 < self.band_low_hz < self.band_high_hz < self.fs_hz / 2:
            raise ValueError(
                f"need 0 < band_low_hz < band_high_hz < fs_hz/2, got {self.band_low_hz}, "
                f"{self.band_high_hz}, fs {self.fs_hz}"
            )
        if self.window_before < 1 or self.window_after < 1:
            raise ValueError("window_before and window_after must be at least 1 sample")
        if self.decimation < 1 or (self.window_before + self.window_after) % self.decimation:
            raise ValueError("decimation must be >= 1 and divide window_before + window_after")
        if self.amplitude_normalisation not in ("rpeak_median", "none"):
            raise ValueError("amplitude_normalisation must be 'rpeak_median' or 'none'")
        if self.wave_clip <= 0:
            raise ValueError(f"wave_clip must be positive, got {self.wave_clip}")
        if min(self.amplitude_beats, self.rr_local_beats, self.rr_long_beats) < 1:
            raise ValueError("amplitude_beats, rr_local_beats and rr_long_beats must be >= 1")

    @property
    def window_length(self) -> int:
        """Samples per beat as the model sees it (after decimation)."""
        return (self.window_before + self.window_after) // self.decimation

    @property
    def model_fs_hz(self) -> float:
        return self.fs_hz / self.decimation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SignalConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown signal config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def digest(self) -> str:
        """Short stable hash: equal digests mean identical model inputs."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]
