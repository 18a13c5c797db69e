"""Causal band-pass filtering shared by training (whole records) and devices (sample streams)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import signal as sp_signal

from edge_runtime.signal_config import SignalConfig

try:  # the compiled kernel that scipy.signal.sosfilt itself runs; its wrapper costs more than the filtering
    from scipy.signal._sosfilt import _sosfilt as _sosfilt_kernel
except ImportError:  # another SciPy layout: the public function, same arithmetic, slower
    _sosfilt_kernel = None


def sosfilt_chunk(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.signal.sosfilt(sos, x, zi=zi)`` for one 1-D float64 chunk, bit for bit (tests check it).

    On one-second chunks scipy's argument handling (axis moves, copies, validation) took more time than
    the filter; the stream calls this twice per chunk."""
    if _sosfilt_kernel is None:
        return sp_signal.sosfilt(sos, x, zi=zi)
    y = np.array(x, np.float64, order="C").reshape(1, -1)
    z = np.array(zi, np.float64, order="C").reshape(1, -1, 2)
    _sosfilt_kernel(np.ascontiguousarray(sos, np.float64), y, z)
    return y[0], z[0]


@lru_cache(maxsize=16)
def _design(fs_hz: float, low: float, high: float, order: int) -> np.ndarray:
    return sp_signal.butter(order, [low, high], btype="bandpass", fs=fs_hz, output="sos")


def bandpass_sos(cfg: SignalConfig) -> np.ndarray:
    """Second-order sections of the Butterworth band-pass (removes baseline wander and EMG/mains)."""
    return _design(cfg.fs_hz, cfg.band_low_hz, cfg.band_high_hz, cfg.filter_order)


@dataclass(frozen=True)
class RestartRules:
    """When the band-pass forgets its past and starts again at the steady state of the current sample.

    A DC step (an electrode re-attached: up to hundreds of mV) would ring through the 0.5 Hz high-pass for
    seconds, hundreds of times a QRS, and the end of a flat stretch (lead off, clipped, invalid samples
    held) is such a step too. Neither happens in ECG: on MIT-BIH the largest change within 10 ms is a few mV
    and the longest run of equal samples 0.73 s, so training inputs never meet these rules. They are not
    part of ``SignalConfig`` (and its digest) for that reason; the C front-end implements the same rules.
    """

    #: A change of more than ``jump_mv`` within ``jump_s`` seconds is a step, not ECG (x10 gain included).
    jump_mv: float = 30.0
    jump_s: float = 0.010
    #: Samples within ``flat_tol_mv`` of their predecessor for ``flat_s`` seconds are a flat line.
    flat_s: float = 1.0
    flat_tol_mv: float = 1e-3

    def __post_init__(self) -> None:
        if self.jump_mv <= 0 or self.jump_s <= 0 or self.flat_s <= 0 or self.flat_tol_mv < 0:
            raise ValueError("jump_mv, jump_s and flat_s must be positive, flat_tol_mv non-negative")

    def jump_lag(self, fs_hz: float) -> int:
        return max(1, int(round(self.jump_s * fs_hz)))

    def flat_run(self, fs_hz: float) -> int:
        return max(1, int(round(self.flat_s * fs_hz)))


def still_run(x: np.ndarray, previous: float | None, carried: int, tol: float) -> np.ndarray:
    """For each sample of ``x``, how many consecutive samples up to it (itself included) lie within ``tol``
    of their predecessor; ``previous`` is the sample before ``x`` (None at the stream's start) and ``carried``
    the run that ended there. Vectorised, so a stream costs a few passes per chunk."""
    idx = np.arange(x.size)
    still = np.zeros(x.size, bool)
    if x.size:
        prev = np.concatenate([[x[0] if previous is None else previous], x[:-1]])
        still = np.abs(x - prev) <= tol
        if previous is None:
            still[0] = False
    if not still.any():  # the usual case on ECG: every sample moves, no run goes on
        return np.zeros(x.size, idx.dtype)
    last_moving = np.maximum.accumulate(np.where(still, -1, idx))
    return np.where(last_moving < 0, idx + 1 + carried, idx - last_moving)


class StreamingBandpass:
    """Filters a signal chunk by chunk; the concatenated output equals ``bandpass(whole_signal)``.

    The filter state starts at the steady state for the first sample, which avoids the start-up
    transient a zero state would give on a signal with a DC offset, and starts again so after a step or
    at the end of a flat line (``RestartRules``). ``restarts`` counts those.
    """

    def __init__(self, cfg: SignalConfig, rules: RestartRules = RestartRules()) -> None:
        self._sos = bandpass_sos(cfg)
        self._zi0 = sp_signal.sosfilt_zi(self._sos)
        self._zi: np.ndarray | None = None
        self._rules = rules
        self._lag = rules.jump_lag(cfg.fs_hz)
        self._flat_run = rules.flat_run(cfg.fs_hz)
        self._tail = np.zeros(0)  # the last ``lag`` samples before this chunk
        self._still = 0  # consecutive unchanged samples ending at the last one
        self.restarts = 0

    def process(self, chunk: np.ndarray) -> np.ndarray:
        x = np.asarray(chunk, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"expected a 1-D chunk of samples, got shape {x.shape}")
        if x.size == 0:
            return x
        starts = self._restarts(x)
        if self._zi is None:
            self._zi = self._zi0 * x[0]
        out = np.empty_like(x)
        bounds = list(starts) + [x.size]
        first = 0
        for k, end in enumerate(bounds):
            if end > first:
                out[first:end], self._zi = sosfilt_chunk(self._sos, x[first:end], self._zi)
            if k < len(starts):
                self._zi = self._zi0 * x[end]
                first = end
        self.restarts += len(starts)
        return out

    def _restarts(self, x: np.ndarray) -> list[int]:
        """Indices in ``x`` where the filter starts again (vectorised; the carried state makes it chunk-free)."""
        rules, lag = self._rules, self._lag
        offset = self._tail.size
        full = np.concatenate([self._tail, x]) if offset else x
        first = max(0, lag - offset)  # the first sample of ``x`` with a sample ``lag`` before it
        flags = np.zeros(x.size, bool)
        flags[first:] = np.abs(x[first:] - full[first + offset - lag:offset + x.size - lag]) > rules.jump_mv
        previous = float(self._tail[-1]) if offset else None
        prev = x[0] if previous is None else previous
        if np.abs(x[0] - prev) > rules.flat_tol_mv and not np.any(np.abs(np.diff(x)) <= rules.flat_tol_mv):
            # the usual ECG chunk: every sample moves, so no run continues and only the first can resume
            flags[0] |= self._still >= self._flat_run
            self._still = 0
        else:
            run = still_run(x, previous, self._still, rules.flat_tol_mv)
            run_before = np.concatenate([[self._still], run[:-1]])
            flags |= (run == 0) & (run_before >= self._flat_run)
            self._still = int(run[-1])
        self._tail = full[-lag:]
        return np.flatnonzero(flags).tolist()


def bandpass(x: np.ndarray, cfg: SignalConfig) -> np.ndarray:
    """Filter a whole record exactly as a stream would be filtered."""
    return StreamingBandpass(cfg).process(x)
