"""Fixed-length beat windows around R-peaks, scaled to the patient's own R amplitude."""
from __future__ import annotations

import numpy as np

from edge_runtime.signal_config import SignalConfig


def row_medians(rows: np.ndarray) -> np.ndarray:
    """``np.median(rows, axis=1)`` bit for bit (the same partition and the same mean of the two middle values),
    without its generic machinery: the stream takes one median per beat, and that machinery cost more than
    the partition (tests check equality)."""
    n = rows.shape[1]
    k = n // 2
    if n % 2:
        return np.partition(rows, k, axis=1)[:, k]
    part = np.partition(rows, (k - 1, k), axis=1)
    return (part[:, k - 1] + part[:, k]) / 2.0


def small_median(values: list[float]) -> float:
    """``float(np.median(values))`` for a handful of floats, bit for bit (the middle value, or the mean of the
    two middle values), in plain Python: the per-beat amplitude median of the stream."""
    ordered = sorted(values)
    k = len(ordered) // 2
    return ordered[k] if len(ordered) % 2 else (ordered[k - 1] + ordered[k]) / 2.0


def amplitude_scales(filtered: np.ndarray, peaks: np.ndarray, cfg: SignalConfig) -> np.ndarray:
    """Per-beat divisor: median |R amplitude| over this beat and the ``amplitude_beats - 1`` before it.

    Causal and robust (an ectopic beat moves a median of eight little), so a device computes it as it
    goes. Electrode placement and skin contact change the gain by several times between patients.
    """
    if cfg.amplitude_normalisation == "none":
        return np.ones(len(peaks), np.float64)
    amp = np.abs(filtered[peaks])
    span = cfg.amplitude_beats
    scales = np.empty(len(peaks), np.float64)
    for i in range(len(peaks)):
        scales[i] = small_median(amp[max(0, i - span + 1) : i + 1].tolist())
    return np.maximum(scales, 1e-3)  # a flat lead must not blow the window up to infinity


def beat_windows(filtered: np.ndarray, peaks: np.ndarray, cfg: SignalConfig) -> tuple[np.ndarray, np.ndarray]:
    """Windows for all beats whose window lies inside the signal.

    Returns ``(windows, beat_index)`` with ``windows`` of shape ``(k, cfg.window_length)``, float32,
    baseline (window median) removed, divided by the beat's amplitude scale, clipped to ``wave_clip``.
    """
    peaks = np.asarray(peaks, dtype=np.int64)
    inside = (peaks - cfg.window_before >= 0) & (peaks + cfg.window_after <= filtered.size)
    beat_index = np.flatnonzero(inside)
    scales = amplitude_scales(filtered, peaks, cfg)[beat_index]
    return cut_windows(filtered, peaks[beat_index], scales, cfg), beat_index


def cut_windows(filtered: np.ndarray, peaks: np.ndarray, scales: np.ndarray, cfg: SignalConfig) -> np.ndarray:
    """The window arithmetic for peaks whose windows lie inside ``filtered`` (the stream calls it per beat)."""
    offsets = np.arange(-cfg.window_before, cfg.window_after, cfg.decimation)
    windows = filtered[np.asarray(peaks, np.int64)[:, None] + offsets[None, :]]
    windows = windows - row_medians(windows)[:, None]
    windows = np.clip(windows / np.asarray(scales, np.float64)[:, None], -cfg.wave_clip, cfg.wave_clip)
    return windows.astype(np.float32)
