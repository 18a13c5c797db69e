"""From per-window AF decisions to episodes: the smoothing the evaluation and the device share.

One irregular window inside sinus rhythm (a burst of ectopics) or one regular-looking window inside AF should
not start or end an episode: each decision becomes the majority of the ``smooth`` windows centred on it.
The device applies the same vote with a delay of ``smooth // 2`` windows (it waits for the later neighbours).
"""
from __future__ import annotations

import numpy as np


def check_smooth(smooth: int) -> int:
    if smooth < 1 or smooth % 2 == 0:
        raise ValueError(f"smooth must be a positive odd number of windows, got {smooth}")
    return smooth


def smooth_decisions(flags: np.ndarray, smooth: int) -> np.ndarray:
    """Centred majority vote over ``smooth`` windows (edges: over the windows that exist)."""
    half = check_smooth(smooth) // 2
    f = np.asarray(flags, bool).astype(np.int64)
    if half == 0 or f.size == 0:
        return f.astype(bool)
    c = np.concatenate([[0], np.cumsum(f)])
    idx = np.arange(f.size)
    lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, f.size)
    return 2 * (c[hi] - c[lo]) > (hi - lo)
