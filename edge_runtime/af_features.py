"""RR-irregularity features of a sliding window of beats: what separates atrial fibrillation from other rhythms.

AF conducts to the ventricles at random: RR intervals are irregularly irregular (no pattern, high successive
differences, high entropy, a scattered Poincare plot). Ectopic beats and bigeminy are irregular too but
*regularly* so (short-long pairs: a strongly negative lag-1 autocorrelation, few occupied Poincare cells), and
sinus arrhythmia changes slowly (positive autocorrelation, small successive differences). All features are
relative to the window's own mean RR, so they hold across heart rates and persons.

The RR features miss what separates AF from a rhythm of ectopics best, the missing P wave: ``window_features``
adds the atrial-activity features of the same beats' normally conducted ones (``atrial_activity``). Training (batch over a record) and
the device (one window at a time) call the same ``window_features`` on the same RR values in seconds, so the
device reproduces the training features exactly. numpy only: no TensorFlow.
"""
from __future__ import annotations

import math

import numpy as np

from edge_runtime.atrial_activity import ATRIAL_FEATURE_NAMES, atrial_features

RR_FEATURE_NAMES: tuple[str, ...] = (
    "mean_rr_s", "cv", "rmssd_rel", "mad_drr_rel", "p_drr_5", "p_drr_10", "p_drr_20", "trimmed_cv",
    "sample_entropy", "shannon_entropy", "turning_points", "autocorr_1", "autocorr_2", "poincare_cells",
    "max_rr_rel", "min_rr_rel",
)
#: What the AF model reads: the RR features and the atrial activity of the same beats (``atrial_activity``).
FEATURE_NAMES: tuple[str, ...] = RR_FEATURE_NAMES + ATRIAL_FEATURE_NAMES

#: Plausible RR intervals in seconds (300 bpm .. 20 bpm). Outside: the caller passed samples or milliseconds.
RR_MIN_S, RR_MAX_S = 0.2, 3.0


def check_rr(rr_s: np.ndarray) -> np.ndarray:
    """``rr_s`` as float64, or ``ValueError`` saying what is wrong (NaN, wrong unit/rate, wrong shape)."""
    rr = np.asarray(rr_s, dtype=np.float64)
    if rr.ndim != 1:
        raise ValueError(f"RR intervals must be a 1-D array in seconds, got shape {rr.shape}")
    if not np.all(np.isfinite(rr)):
        raise ValueError(f"RR intervals hold {int(np.sum(~np.isfinite(rr)))} NaN/infinite value(s); "
                         "drop the beats around a gap instead of passing NaN")
    if rr.size and np.any(rr <= 0):
        raise ValueError("RR intervals must be positive (beat times strictly increasing)")
    if rr.size:
        median = float(np.median(rr))
        if not RR_MIN_S <= median <= RR_MAX_S:
            raise ValueError(f"median RR {median:g} is not a heart rhythm in seconds ({RR_MIN_S}-{RR_MAX_S} s): "
                             "RR must be in seconds (sample differences divided by the sampling rate; is the "
                             "rate right?)")
    return rr


def _sample_entropy(x: np.ndarray, m: int = 2, r: float = 0.2) -> float:
    """SampEn(m, r*std) of a short series; capped at log(n) when no template matches (very irregular)."""
    n = x.size
    cap = math.log(max(n, 2))
    sd = float(np.std(x))
    if sd == 0.0 or n <= m + 1:
        return 0.0
    tol = r * sd

    def matches(k: int) -> int:
        emb = np.stack([x[i:n - m + i] for i in range(k)], axis=1)
        dist = np.max(np.abs(emb[:, None, :] - emb[None, :, :]), axis=2)
        return int((np.sum(dist <= tol) - len(emb)) // 2)

    b, a = matches(m), matches(m + 1)
    if a == 0 or b == 0:
        return cap
    return min(-math.log(a / b), cap)


def rr_features(rr_s: np.ndarray) -> np.ndarray:
    """The ``RR_FEATURE_NAMES`` of one window of RR intervals in seconds (oldest first, >= 8 of them)."""
    rr = check_rr(rr_s)
    if rr.size < 8:
        raise ValueError(f"a window needs at least 8 RR intervals, got {rr.size}")
    mean = float(np.mean(rr))
    rel = rr / mean
    d = np.diff(rel)
    ad = np.abs(d)
    trimmed = np.sort(rel)[rr.size // 10: rr.size - rr.size // 10]
    # Shannon entropy of the RR histogram (16 bins over the window's range), normalised to 0..1.
    span = float(rel.max() - rel.min())
    if span > 1e-9:
        hist = np.histogram(rel, bins=16, range=(float(rel.min()), float(rel.max())))[0] / rel.size
        hist = hist[hist > 0]
        shannon = float(-np.sum(hist * np.log(hist)) / math.log(16))
    else:
        shannon = 0.0
    turning = float(np.mean((d[1:] * d[:-1]) < 0)) if d.size > 1 else 0.0
    centred = rel - rel.mean()
    var = float(np.sum(centred * centred))
    ac1 = float(np.sum(centred[1:] * centred[:-1]) / var) if var > 1e-12 else 1.0
    ac2 = float(np.sum(centred[2:] * centred[:-2]) / var) if var > 1e-12 else 1.0
    # Occupied cells of the successive-difference (Poincare of dRR) plane, 6 % of the mean RR per cell.
    cells = np.floor(np.stack([d[1:], d[:-1]], axis=1) / 0.06).astype(np.int64)
    occupied = len({(int(a), int(b)) for a, b in cells}) / max(len(cells), 1)
    return np.array([
        mean, float(np.std(rel)), float(np.sqrt(np.mean(d * d))), float(np.median(ad)),
        float(np.mean(ad > 0.05)), float(np.mean(ad > 0.10)), float(np.mean(ad > 0.20)),
        float(np.std(trimmed)), _sample_entropy(rel), shannon, turning, ac1, ac2, occupied,
        float(rel.max()), float(rel.min()),
    ], dtype=np.float32)


def window_starts(n_rr: int, window: int, hop: int) -> np.ndarray:
    """First RR index of every full window of ``window`` intervals, ``hop`` apart."""
    if window < 8 or hop < 1:
        raise ValueError(f"window must be >= 8 and hop >= 1, got {window} and {hop}")
    if n_rr < window:
        return np.zeros(0, np.int64)
    return np.arange(0, n_rr - window + 1, hop, dtype=np.int64)


def standardise(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Scale with the training statistics; clipped so that int8 input ranges hold."""
    z = (np.asarray(features, np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.clip(z, -6.0, 6.0).astype(np.float32)


def window_features(rr_s: np.ndarray, p_corr: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """The ``FEATURE_NAMES`` of one window: its RR intervals, and the P-wave correlations and normal-QRS flags of
    the beats ending them (``atrial_activity``)."""
    rr = np.asarray(rr_s)
    if np.shape(p_corr) != rr.shape:
        raise ValueError(f"one P-wave correlation per RR interval is needed, got {np.shape(p_corr)} for {rr.shape}")
    return np.concatenate([rr_features(rr), atrial_features(p_corr, normal)]).astype(np.float32)
