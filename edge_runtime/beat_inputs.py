"""Model inputs for a record: the one function training and the device both call."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime.beat_windows import beat_windows
from edge_runtime.filtering import bandpass
from edge_runtime.rr_features import rr_features
from edge_runtime.signal_config import SignalConfig


@dataclass(frozen=True)
class BeatInputs:
    """Inputs for the beats that have a full window and both RR neighbours.

    ``beat_index[k]`` is the position in the caller's peak list of row ``k``: beats near the record
    edges are dropped, never padded.
    """

    waves: np.ndarray  # (k, window_length) float32
    rr: np.ndarray  # (k, len(RR_FEATURE_NAMES)) float32, unscaled (seconds and ratios)
    beat_index: np.ndarray  # (k,) int64


def beat_inputs(raw: np.ndarray, peaks: np.ndarray, cfg: SignalConfig) -> BeatInputs:
    """Filter ``raw`` (millivolts at ``cfg.fs_hz``) and cut windows and RR features at ``peaks``."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 1:
        raise ValueError(f"expected one lead (1-D), got shape {raw.shape}")
    if not np.all(np.isfinite(raw)):
        raise ValueError("signal contains NaN or Inf samples; repair or drop the segment first")
    filtered = bandpass(raw, cfg)
    waves, w_idx = beat_windows(filtered, peaks, cfg)
    rr, r_idx = rr_features(peaks, cfg)
    keep, w_pos, r_pos = np.intersect1d(w_idx, r_idx, assume_unique=True, return_indices=True)
    return BeatInputs(waves=waves[w_pos], rr=rr[r_pos], beat_index=keep)
