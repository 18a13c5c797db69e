"""RR-interval features: the rhythm context that separates supraventricular from normal beats.

A premature S beat looks like an N beat; what gives it away is that it comes early relative to this
patient's own rhythm. Hence ratios to causal running averages, not absolute intervals alone.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.signal_config import RR_FEATURE_NAMES, SignalConfig


def rr_feature_row(history_s: np.ndarray, post_s: float, cfg: SignalConfig) -> np.ndarray:
    """Features of one beat from the RR intervals up to and including its pre-RR (oldest first, at least
    the last ``rr_long_beats`` of them when there are that many) and its post-RR, in seconds.

    Batch and streaming code both call this one function on the same values, so a device reproduces
    the training features bit for bit.
    """
    pre = float(history_s[-1])
    local = float(np.mean(history_s[-cfg.rr_local_beats:]))
    long = float(np.mean(history_s[-cfg.rr_long_beats:]))
    return np.array([pre, post_s, local, long, pre / local, post_s / pre, pre / long], np.float32)


def rr_features(peaks: np.ndarray, cfg: SignalConfig) -> tuple[np.ndarray, np.ndarray]:
    """Features for every beat that has a previous and a next beat.

    Returns ``(features, beat_index)``: ``features[k]`` (columns: ``RR_FEATURE_NAMES``) describes beat
    ``beat_index[k]`` of ``peaks``. The first and last beats are skipped (no pre- or post-RR). The local
    and long averages use only RR intervals up to and including the current beat's pre-RR, so a
    streaming device computes the same numbers one beat later (it must wait for the post-RR anyway).
    """
    peaks = np.asarray(peaks, dtype=np.int64)
    if peaks.ndim != 1:
        raise ValueError(f"peaks must be 1-D sample indices, got shape {peaks.shape}")
    if peaks.size < 3:
        return np.zeros((0, len(RR_FEATURE_NAMES)), np.float32), np.zeros(0, np.int64)
    if np.any(np.diff(peaks) <= 0):
        raise ValueError("peaks must be strictly increasing sample indices")
    rr = np.diff(peaks) / cfg.fs_hz  # rr[i] = interval between beat i and beat i+1
    span = cfg.rr_long_beats
    feats = np.stack([rr_feature_row(rr[max(0, i - span):i], float(rr[i]), cfg) for i in range(1, rr.size)])
    return feats, np.arange(1, peaks.size - 1)


def standardise_rr(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Scale RR features with the training statistics; clipped so that int8 input ranges hold."""
    z = (np.asarray(features, np.float32) - mean) / std
    return np.clip(z, -6.0, 6.0).astype(np.float32)
