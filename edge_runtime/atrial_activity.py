"""Atrial activity before each R-peak: is there a P wave like the ones before it?

In sinus rhythm, and around ectopic beats, most beats are preceded by a P wave of the same shape; in atrial
fibrillation there is none, only fibrillatory waves that differ from beat to beat. The RR features cannot tell
an irregular rhythm of ectopics (premature beats, bigeminy, sinus arrhythmia) from AF; this can. Per beat: the
correlation of the stretch before the QRS (the first ``P_SEGMENT`` samples of the beat window, about 250 to 70 ms
before the R-peak, where the P wave sits) with a running template of that stretch over the beats before it. Per
window: the share of beats whose stretch matches the template and the median correlation.

Causal and per beat, so the device (``AfMonitor``, on the beat windows its beat stream already cuts) and training
(the same windows cut offline at the annotated beats) compute it with this one class.
"""
from __future__ import annotations

import numpy as np

#: Samples of the beat window used (the window starts 250 ms before the R-peak and keeps every 2nd sample at
#: 360 Hz: 32 samples end 72 ms before the R-peak, before the QRS onset of a normal beat).
P_SEGMENT = 32
#: Weight of the newest beat in the running template (an exponential mean over ~20 beats).
TEMPLATE_ALPHA = 0.05
#: A beat "has a consistent P wave" when its stretch correlates with the template above this.
P_CONSISTENT = 0.6
ATRIAL_FEATURE_NAMES: tuple[str, ...] = ("p_consistent", "p_corr_median")


def _detrended(segment: np.ndarray) -> np.ndarray:
    """The stretch without its mean and linear trend (baseline drift and the tail of the previous T wave)."""
    s = np.asarray(segment, np.float64)
    t = np.arange(s.size, dtype=np.float64) - (s.size - 1) / 2.0
    s = s - s.mean()
    return s - (s @ t / (t @ t)) * t


class PWaveTracker:
    """Feed beat windows in order; ``correlate`` returns each beat's correlation with the template of the beats
    before it (0 for the first beat: nothing to compare with), then updates the template."""

    def __init__(self, segment: int = P_SEGMENT, alpha: float = TEMPLATE_ALPHA) -> None:
        if segment < 8 or not 0 < alpha <= 1:
            raise ValueError(f"segment must be >= 8 samples and 0 < alpha <= 1, got {segment} and {alpha}")
        self.segment, self.alpha = segment, alpha
        self._template: np.ndarray | None = None

    def correlate(self, wave: np.ndarray) -> float:
        w = np.asarray(wave)
        if w.ndim != 1 or w.size < self.segment:
            raise ValueError(f"a beat window of at least {self.segment} samples is needed, got shape {w.shape}")
        if not np.all(np.isfinite(w[:self.segment])):
            raise ValueError("beat window holds NaN/infinite samples")
        s = _detrended(w[:self.segment])
        if self._template is None:
            self._template = s
            return 0.0
        den = float(np.linalg.norm(s) * np.linalg.norm(self._template))
        corr = float(s @ self._template / den) if den > 1e-12 else 0.0
        self._template = (1.0 - self.alpha) * self._template + self.alpha * s
        return corr


def p_correlations(waves: np.ndarray) -> np.ndarray:
    """``PWaveTracker.correlate`` over a record's beat windows, oldest first (what the device computes beat by beat)."""
    tracker = PWaveTracker()
    return np.array([tracker.correlate(w) for w in np.asarray(waves)], dtype=np.float64)


def atrial_features(p_corr: np.ndarray) -> np.ndarray:
    """``ATRIAL_FEATURE_NAMES`` of one window's per-beat P-wave correlations."""
    c = np.asarray(p_corr, np.float64)
    if c.ndim != 1 or c.size == 0 or not np.all(np.isfinite(c)):
        raise ValueError(f"P-wave correlations must be a non-empty finite 1-D array, got shape {c.shape}")
    return np.array([float(np.mean(c > P_CONSISTENT)), float(np.median(c))], dtype=np.float32)
