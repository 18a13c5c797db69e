"""Atrial-activity features on real ECG: P waves before the QRS in sinus rhythm and around ectopics, none in AF
(MIT-BIH 201 in and out of AF, 119's bigeminy, an AF Termination Challenge segment), and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.atrial_activity import ATRIAL_FEATURE_NAMES, PWaveTracker, atrial_features

P = {name: i for i, name in enumerate(ATRIAL_FEATURE_NAMES)}


def _window_medians(beat_p: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Median over the 32-beat windows of the kept beats of ``atrial_features``."""
    c = beat_p[keep]
    rows = [atrial_features(c[i:i + 32]) for i in range(0, c.size - 32, 32)]
    return np.median(np.stack(rows), axis=0)


def test_p_waves_are_consistent_in_sinus_rhythm_and_absent_in_af(mitdb_dir):
    from training.tasks.af_data import record_rhythm

    r201 = record_rhythm(mitdb_dir, "201")
    start, end = r201.episodes[0]  # 201 opens in AF (~6 min), then sinus rhythm
    af = _window_medians(r201.beat_p, (r201.beat_s > start + 20) & (r201.beat_s < end))
    sinus = _window_medians(r201.beat_p, (r201.beat_s > end + 20) & (r201.beat_s < end + 400) & ~r201.beat_af)
    assert af[P["p_consistent"]] < 0.35 < 0.5 < sinus[P["p_consistent"]]
    assert af[P["p_corr_median"]] < 0.4 < 0.7 < sinus[P["p_corr_median"]]
    # 119: ventricular bigeminy/trigeminy, as irregular in RR as AF, but its sinus beats keep their P waves
    r119 = record_rhythm(mitdb_dir, "119")
    assert _window_medians(r119.beat_p, np.ones(r119.beat_p.size, bool))[P["p_consistent"]] > 0.5


def test_an_af_termination_segment_has_no_consistent_p_wave(mitdb_dir):
    from training.tasks.af_data import beat_p_correlations
    from training.tasks.aftdb import beat_times, first_lead, locate_aftdb

    folder = locate_aftdb(mitdb_dir=mitdb_dir)
    signal, fs = first_lead(folder, "learning-set/n01")
    assert fs == 128.0  # resampled to the stream's 360 Hz inside beat_p_correlations
    corr = beat_p_correlations(signal, fs, np.round(beat_times(folder, "learning-set/n01") * fs))
    assert corr.size > 60 and atrial_features(corr[20:])[P["p_consistent"]] < 0.35


def test_tracker_correlates_a_repeated_p_wave_and_refuses_bad_windows():
    t = np.linspace(0, 1, 100)
    p_wave = np.exp(-((t - 0.15) / 0.04) ** 2)
    tracker = PWaveTracker()
    assert tracker.correlate(p_wave) == 0.0  # nothing to compare the first beat with
    assert tracker.correlate(p_wave) > 0.99
    assert tracker.correlate(np.random.default_rng(0).standard_normal(100)) < 0.6
    with pytest.raises(ValueError, match="at least 32"):
        tracker.correlate(np.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        tracker.correlate(np.full(100, np.nan))
    with pytest.raises(ValueError, match="non-empty"):
        atrial_features(np.zeros(0))
