"""RR-interval features: the rhythm context that separates supraventricular from normal beats.

A premature S beat looks like an N beat; what gives it away is that it comes early relative to this
patient's own rhythm. Hence ratios to causal running averages, not absolute intervals alone.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.signal_config import RR_FEATURE_NAMES, SignalConfig


def _causal_mean(values: np.ndarray, span: int) -> np.ndarray:
    """Mean of values[max(0, i - span + 1) .. i] for every i (inclusive window of ``span`` items)."""
    csum = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(values.size)
    lo = np.maximum(0, idx - span + 1)
    return (csum[idx + 1] - csum[lo]) / (idx + 1 - lo)


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
    pre = rr[:-1]  # for beats 1 .. n-2
    post = rr[1:]
    local = _causal_mean(rr, cfg.rr_local_beats)[:-1]
    long = _causal_mean(rr, cfg.rr_long_beats)[:-1]
    feats = np.stack([pre, post, local, long, pre / local, post / pre, pre / long], axis=1)
    return feats.astype(np.float32), np.arange(1, peaks.size - 1)


def standardise_rr(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Scale RR features with the training statistics; clipped so that int8 input ranges hold."""
    z = (np.asarray(features, np.float32) - mean) / std
    return np.clip(z, -6.0, 6.0).astype(np.float32)
