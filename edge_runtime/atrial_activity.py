"""Atrial activity before each R-peak: is there a P wave like the ones before it?

In sinus rhythm, and around ectopic beats, the normally conducted beats are preceded by a P wave of the same
shape; in atrial fibrillation there is none, only fibrillatory waves that differ from beat to beat. The RR
features cannot tell an irregular rhythm of ectopics (premature beats, bigeminy, sinus arrhythmia) from AF; this
can. Per beat: the correlation of the stretch before the QRS (the first ``P_SEGMENT`` samples of the beat window,
about 250 to 70 ms before the R-peak, where the P wave sits) with a running template of that stretch. Ventricular
ectopics have no P wave of their own, so only beats with the dominant QRS (``qrs_morphology``) update the
template and count in a window's features: the share of those beats whose stretch matches the template
(``p_consistent_normal``) and their median correlation (``p_corr_median_normal``). Counting every beat made a run
of bigeminy look half-way to AF (DS1: record 208's false episodes, docs/tasks/af.md).

Causal and per beat, so the device (``AfMonitor``, on the beat windows its beat stream already cuts) and training
(the same windows cut offline at the annotated beats) compute it with this one class.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.qrs_morphology import QrsTracker, StretchTemplate

#: Samples of the beat window used (the window starts 250 ms before the R-peak and keeps every 2nd sample at
#: 360 Hz: 32 samples end 72 ms before the R-peak, before the QRS onset of a normal beat).
P_SEGMENT = 32
#: Weight of the newest beat in the running template (an exponential mean over ~20 beats).
TEMPLATE_ALPHA = 0.05
#: A beat "has a consistent P wave" when its stretch correlates with the template above this.
P_CONSISTENT = 0.6
#: A window with fewer beats of the dominant QRS is scored over all its beats (no normal rhythm to read).
MIN_NORMAL_BEATS = 4
ATRIAL_FEATURE_NAMES: tuple[str, ...] = ("p_consistent_normal", "p_corr_median_normal")


class PWaveTracker:
    """Feed beat windows in order; ``correlate`` returns each beat's correlation with the template of the beats
    before it (0 for the first beat: nothing to compare with), then updates the template with it if ``update``."""

    def __init__(self, segment: int = P_SEGMENT, alpha: float = TEMPLATE_ALPHA) -> None:
        if segment < 8 or not 0 < alpha <= 1:
            raise ValueError(f"segment must be >= 8 samples and 0 < alpha <= 1, got {segment} and {alpha}")
        self._p = StretchTemplate(0, segment, alpha)

    def correlate(self, wave: np.ndarray, update: bool = True) -> float:
        s = self._p.stretch(wave)
        corr = self._p.correlate(s)
        if corr is None:
            return 0.0
        if update:
            self._p.learn(s)
        return corr


class AtrialTracker:
    """Per beat window, in order: ``(P-wave correlation, has the dominant QRS)``; only such beats teach the P
    template."""

    def __init__(self) -> None:
        self._qrs, self._p = QrsTracker(), PWaveTracker()

    def observe(self, wave: np.ndarray) -> tuple[float, bool]:
        normal = self._qrs.is_normal(wave)
        return self._p.correlate(wave, update=normal), normal


def beat_activity(waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``AtrialTracker.observe`` over a record's beat windows, oldest first (what the device computes beat by
    beat): P-wave correlations (float64) and normal-QRS flags (bool)."""
    tracker = AtrialTracker()
    seen = [tracker.observe(w) for w in np.asarray(waves)]
    return np.array([c for c, _ in seen], np.float64), np.array([n for _, n in seen], bool)


def atrial_features(p_corr: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """``ATRIAL_FEATURE_NAMES`` of one window's per-beat P-wave correlations and normal-QRS flags."""
    c, n = np.asarray(p_corr, np.float64), np.asarray(normal, bool)
    if c.ndim != 1 or c.size == 0 or not np.all(np.isfinite(c)):
        raise ValueError(f"P-wave correlations must be a non-empty finite 1-D array, got shape {c.shape}")
    if n.shape != c.shape:
        raise ValueError(f"one normal-QRS flag per P-wave correlation is needed, got {n.shape} for {c.shape}")
    if n.sum() >= MIN_NORMAL_BEATS:
        c = c[n]
    return np.array([float(np.mean(c > P_CONSISTENT)), float(np.median(c))], dtype=np.float32)
