"""From per-window AF decisions to episodes: the gate and the smoothing the evaluation and the device share.

A window is called AF when the model says so and the P waves before its normally conducted beats are not
consistent (``p_gated``): the small network, trained on two MIT-BIH AF persons and the aftdb segments, extrapolates
from RR irregularity alone on ectopy it never saw (DS1 leave-records-out: 208's bigeminy and couplets gave 10-14
false episodes with median P-wave correlations of 0.9 and more), while no AF window of DS1 has a consistent P
wave. One irregular window inside sinus rhythm (a burst of ectopics) or one regular-looking window inside AF
should not start or end an episode: each decision becomes the majority of the ``smooth`` windows centred on it.
The device applies the same vote with a delay of ``smooth // 2`` windows (it waits for the later neighbours).
"""
from __future__ import annotations

import numpy as np

#: A window whose ``p_corr_median_normal`` reaches this has P waves: not AF, whatever the RR rhythm. Picked by the
#: rule of ``pulsewire tasks af-selection`` (highest DS1 leave-records-out +P among the gates that keep >= 95 % of
#: the aftdb AF windows and segments): 0.5 had DS1's best +P but removed 12 % of aftdb's AF windows.
P_GATE = 0.9
#: A window irregular by its plain RR (``rr_ectopy.raw_irregularity`` at least this) whose ectopy-cleaned RR
#: (``clean_irregularity``: median |ΔRR| between normally conducted, non-premature beats, relative to the RR) is
#: below this is a rhythm of ectopics, not AF. Picked by the rule of ``pulsewire tasks af-ectopy-selection``
#: (DS1 leave-records-out +P at unchanged Se, aftdb AF kept); 0 = no gate.
ECTOPY_GATE = 0.04
#: The model's AF probability from which a window is called AF (same selection; 0.5 until then). DS1: +P 0.467
#: -> 0.875 at episode Se 1.0 with the gate (bench/results/af-ds1-ectopy-selection.json).
AF_THRESHOLD = 0.7


def p_gated(prob: np.ndarray, p_median: np.ndarray, threshold: float, p_gate: float = P_GATE) -> np.ndarray:
    """Window decisions: AF probability at or above ``threshold`` and median P-wave correlation below ``p_gate``."""
    return (np.asarray(prob) >= threshold) & (np.asarray(p_median) < p_gate)


def ectopy_gated(flags: np.ndarray, irregularity: np.ndarray, ectopy_gate: float = ECTOPY_GATE) -> np.ndarray:
    """Window decisions, vetoed where ectopy explains the irregularity: ``irregularity`` holds (clean, raw) per
    window (``rr_ectopy.window_irregularity``); veto where raw >= ``ectopy_gate`` > clean (0: never)."""
    irr = np.asarray(irregularity, np.float64).reshape(-1, 2)
    explained = (irr[:, 1] >= ectopy_gate) & (irr[:, 0] < ectopy_gate)
    return np.asarray(flags, bool) & ~explained.reshape(np.shape(flags))


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
