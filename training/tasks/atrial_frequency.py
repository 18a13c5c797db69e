"""Dominant atrial frequency of a one-minute AF segment, after the ventricular activity is cancelled.

Organised, slower fibrillation is the one that stops: the 2004 PhysioNet / Computers in Cardiology challenge
entries found a lower dominant atrial frequency in AF about to terminate. Average-beat subtraction (QRST
cancellation): the median beat around every R-peak is subtracted, what is left is mostly atrial activity, and the
peak of its spectrum between 3 and 12 Hz (fibrillatory waves, 180-720 per minute) is the dominant frequency.
An offline study on whole recorded segments (zero-phase filtering); not part of the device's contract.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import signal as sp

#: The cancelled stretch around each R-peak: 100 ms before (P/f-wave-free QRS onset) to 450 ms after (the T wave).
BEFORE_S, AFTER_S = 0.10, 0.45
BAND_HZ = (3.0, 12.0)


def dominant_frequency(ecg_mv: np.ndarray, fs_hz: float, beat_s: np.ndarray) -> float:
    """Peak frequency (Hz) in ``BAND_HZ`` of the residual after average-beat subtraction."""
    x = np.asarray(ecg_mv, np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)) or x.size < 8 * fs_hz:
        raise ValueError(f"need a finite 1-D ECG of at least 8 s, got shape {x.shape}")
    x = sp.sosfiltfilt(sp.butter(2, [1.0, 40.0], "bandpass", fs=fs_hz, output="sos"), x)
    pre, post = int(BEFORE_S * fs_hz), int(AFTER_S * fs_hz)
    peaks = np.round(np.asarray(beat_s) * fs_hz).astype(np.int64)
    peaks = peaks[(peaks - pre >= 0) & (peaks + post < x.size)]
    if peaks.size < 5:
        raise ValueError(f"need at least 5 beats inside the segment for a beat template, got {peaks.size}")
    template = np.median(np.stack([x[p - pre:p + post] for p in peaks]), axis=0)
    residual = x.copy()
    for p in peaks:
        residual[p - pre:p + post] -= template
    f, power = sp.welch(residual, fs_hz, nperseg=min(512, residual.size))
    band = (f >= BAND_HZ[0]) & (f <= BAND_HZ[1])
    return float(f[band][np.argmax(power[band])])


def segment_frequencies(data_dir: Path, record: str, beat_s: np.ndarray) -> np.ndarray:
    """``dominant_frequency`` of each ECG lead of one WFDB record."""
    import wfdb

    rec = wfdb.rdrecord(str(Path(data_dir) / record))
    return np.array([dominant_frequency(rec.p_signal[:, i], float(rec.fs), beat_s) for i in range(rec.n_sig)])
