"""RR irregularity with the ectopic beats taken out: what is left of a window's irregularity once the beats that
make an ectopic rhythm irregular are ignored.

A window of frequent ectopy (ventricular bigeminy, couplets, atrial premature beats followed by a pause) is as
irregular as AF by every RR statistic, yet the rhythm *between* the ectopics is regular. AF is irregular between
normally conducted beats too. So, per window: drop every RR interval that ends in a beat without the dominant QRS
(``qrs_morphology``: a ventricular ectopic) or starts at one (its compensatory pause), and every premature
interval (shorter than ``PREMATURE`` of the window's median RR) followed by a long one (longer than
``1 / PREMATURE`` of it: the coupling interval and pause of a premature beat, the short-long-short pattern)
together with that pause. What remains is compared pair by pair (successive intervals that both remain): the
median |ΔRR| relative to the median remaining RR, so a few sinus pauses do not count.

When the QRS calls leave fewer than ``MIN_PAIRS`` pairs, the short-long pattern alone decides which intervals go:
that happens in a bigeminy (every interval touches an ectopic; its short-long pairs go too, so it still ends
near 0) and where the QRS template is lost in AF itself (the aftdb segments, 128 Hz, keep 12-21 % "normal" beats in
their worst windows), which the RR pattern alone leaves irregular. Still fewer pairs: 0, no normally conducted
rhythm to call irregular. Chosen on DS1 and aftdb only (``pulsewire tasks af-ectopy-selection``).

``af_episodes.ectopy_gated`` vetoes an AF call only where ectopy *explains* the irregularity: the window's plain
irregularity (``raw_irregularity``, the same median over all intervals) reaches the task's ``ectopy_gate`` and
the cleaned one does not. A window regular to begin with is left to the network and the P-wave gate (vetoing it
too lost aftdb AF segments whose RR is briefly regular, a first design: ``af-ds1-ectopy-selection-v1.json``).
numpy only; the device (``AfMonitor``, one window at a time) and the evaluation (``window_irregularity``, a
record at a time) call the same two functions.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.af_features import window_starts

#: An interval shorter than this share of the window's median RR is premature (the coupling interval of an
#: ectopic); one longer than its inverse right after a premature one is the pause that follows it.
PREMATURE = 0.85
#: Fewer successive pairs of remaining intervals than this: the QRS calls are set aside, then irregularity 0.
MIN_PAIRS = 6
NAME = "clean_mad_drr_rel"


def clean_intervals(rr_s: np.ndarray, normal_beats: np.ndarray) -> np.ndarray:
    """Which RR intervals stay: both their beats have the dominant QRS, and they are neither the premature interval
    nor the pause of a short-long pair. ``normal_beats`` has one flag per beat (``len(rr) + 1``)."""
    rr, normal = np.asarray(rr_s, np.float64), np.asarray(normal_beats, bool)
    if rr.ndim != 1 or normal.shape != (rr.size + 1,):
        raise ValueError(f"one normal-QRS flag per beat (len(rr) + 1 = {rr.size + 1}) is needed, got {normal.shape}")
    keep = normal[:-1] & normal[1:]
    if rr.size > 1:
        ref = float(np.median(rr))
        pair = (rr[:-1] < PREMATURE * ref) & (rr[1:] > ref / PREMATURE)
        keep[:-1] &= ~pair
        keep[1:] &= ~pair
    return keep


def _pairs(keep: np.ndarray) -> np.ndarray:
    return keep[:-1] & keep[1:]


def clean_irregularity(rr_s: np.ndarray, normal_beats: np.ndarray) -> float:
    """Median |ΔRR| over successive remaining intervals relative to their median RR (module docstring)."""
    rr = np.asarray(rr_s, np.float64)
    keep = clean_intervals(rr, normal_beats)
    if int(_pairs(keep).sum()) < MIN_PAIRS:
        keep = clean_intervals(rr, np.ones(rr.size + 1, bool))
    both = _pairs(keep)
    if int(both.sum()) < MIN_PAIRS:
        return 0.0
    return float(np.median(np.abs(np.diff(rr))[both]) / np.median(rr[keep]))


def raw_irregularity(rr_s: np.ndarray) -> float:
    """Median |ΔRR| over all successive intervals relative to the median RR: what ectopy cleaning starts from."""
    rr = np.asarray(rr_s, np.float64)
    return float(np.median(np.abs(np.diff(rr))) / np.median(rr)) if rr.size > 1 else 0.0


def window_irregularity(beat_s: np.ndarray, beat_normal: np.ndarray, window: int, hop: int) -> np.ndarray:
    """``(clean_irregularity, raw_irregularity)`` of every window of a record's beats, shape (n, 2): the windows
    ``af_data.windows_of`` cuts (the ``window`` intervals from beat ``start`` to ``start + window``, ``hop`` apart)."""
    t, n = np.asarray(beat_s, np.float64), np.asarray(beat_normal, bool)
    if n.shape != t.shape:
        raise ValueError(f"one normal-QRS flag per beat is needed, got {n.shape} for {t.shape}")
    rr = np.diff(t) if t.size > 1 else np.zeros(0)
    rows = [(clean_irregularity(rr[s:s + window], n[s:s + window + 1]), raw_irregularity(rr[s:s + window]))
            for s in window_starts(rr.size, window, hop)]
    return np.array(rows, np.float64).reshape(-1, 2)
