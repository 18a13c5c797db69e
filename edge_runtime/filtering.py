"""Causal band-pass filtering shared by training (whole records) and devices (sample streams)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import signal as sp_signal

from edge_runtime.signal_config import SignalConfig


@lru_cache(maxsize=16)
def _design(fs_hz: float, low: float, high: float, order: int) -> np.ndarray:
    return sp_signal.butter(order, [low, high], btype="bandpass", fs=fs_hz, output="sos")


def bandpass_sos(cfg: SignalConfig) -> np.ndarray:
    """Second-order sections of the Butterworth band-pass (removes baseline wander and EMG/mains)."""
    return _design(cfg.fs_hz, cfg.band_low_hz, cfg.band_high_hz, cfg.filter_order)


class StreamingBandpass:
    """Filters a signal chunk by chunk; the concatenated output equals ``bandpass(whole_signal)``.

    The filter state starts at the steady state for the first sample, which avoids the start-up
    transient a zero state would give on a signal with a DC offset.
    """

    def __init__(self, cfg: SignalConfig) -> None:
        self._sos = bandpass_sos(cfg)
        self._zi: np.ndarray | None = None

    def process(self, chunk: np.ndarray) -> np.ndarray:
        x = np.asarray(chunk, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"expected a 1-D chunk of samples, got shape {x.shape}")
        if x.size == 0:
            return x
        if self._zi is None:
            self._zi = sp_signal.sosfilt_zi(self._sos) * x[0]
        y, self._zi = sp_signal.sosfilt(self._sos, x, zi=self._zi)
        return y


def bandpass(x: np.ndarray, cfg: SignalConfig) -> np.ndarray:
    """Filter a whole record exactly as a stream would be filtered."""
    return StreamingBandpass(cfg).process(x)
