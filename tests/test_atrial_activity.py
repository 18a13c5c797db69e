"""Atrial-activity features on real ECG: P waves before the normal beats in sinus rhythm and around ectopics, none
in AF (MIT-BIH 201 in and out of AF, 119's bigeminy, 208's couplets, an AF Termination Challenge segment), the QRS
call that picks the normal beats, and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.atrial_activity import (
    ATRIAL_FEATURE_NAMES,
    AtrialTracker,
    PWaveTracker,
    atrial_features,
)
from edge_runtime.qrs_morphology import QrsTracker

P = {name: i for i, name in enumerate(ATRIAL_FEATURE_NAMES)}


def _window_medians(beat_p: np.ndarray, normal: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Median over the 32-beat windows of the kept beats of ``atrial_features``."""
    c, n = beat_p[keep], normal[keep]
    rows = [atrial_features(c[i:i + 32], n[i:i + 32]) for i in range(0, c.size - 32, 32)]
    return np.median(np.stack(rows), axis=0)


def test_p_waves_are_consistent_in_sinus_rhythm_and_absent_in_af(mitdb_dir):
    from training.tasks.af_data import record_rhythm

    r201 = record_rhythm(mitdb_dir, "201")
    start, end = r201.episodes[0]  # 201 opens in AF (~6 min), then sinus rhythm
    af = _window_medians(r201.beat_p, r201.beat_normal, (r201.beat_s > start + 20) & (r201.beat_s < end))
    sinus = _window_medians(r201.beat_p, r201.beat_normal,
                            (r201.beat_s > end + 20) & (r201.beat_s < end + 400) & ~r201.beat_af)
    assert af[P["p_consistent_normal"]] < 0.35 and sinus[P["p_consistent_normal"]] > 0.5
    assert af[P["p_corr_median_normal"]] < 0.4 and sinus[P["p_corr_median_normal"]] > 0.7
    # 119: ventricular bigeminy/trigeminy, as irregular in RR as AF, but its sinus beats keep their P waves
    r119 = record_rhythm(mitdb_dir, "119")
    every = np.ones(r119.beat_p.size, bool)
    assert _window_medians(r119.beat_p, r119.beat_normal, every)[P["p_consistent_normal"]] > 0.9


def test_only_normal_beats_count_so_ventricular_runs_keep_their_p_waves(mitdb_dir):
    """208 (ventricular couplets, fusion beats): the QRS call drops the V beats; over the rest the P waves are
    consistent, over all beats far less so."""
    from edge_runtime.aami import aami_class
    from training.data.mitdb import load_record
    from training.tasks.af_data import record_rhythm

    r208 = record_rhythm(mitdb_dir, "208")
    rec = load_record(mitdb_dir, "208")
    symbols = np.array([s for s in rec.ann_symbol if aami_class(str(s)) is not None])
    assert symbols.size == r208.beat_normal.size
    assert r208.beat_normal[symbols == "N"].mean() > 0.9 and r208.beat_normal[symbols == "V"].mean() < 0.1
    keep = np.ones(r208.beat_p.size, bool)
    normal_only = _window_medians(r208.beat_p, r208.beat_normal, keep)[P["p_consistent_normal"]]
    every_beat = _window_medians(r208.beat_p, np.ones_like(r208.beat_normal), keep)[P["p_consistent_normal"]]
    assert normal_only > 0.85 and every_beat < normal_only - 0.2


def test_an_af_termination_segment_has_no_consistent_p_wave(mitdb_dir):
    from training.tasks.af_data import beat_atrial_activity
    from training.tasks.aftdb import beat_times, first_lead, locate_aftdb

    folder = locate_aftdb(mitdb_dir=mitdb_dir)
    signal, fs = first_lead(folder, "learning-set/n01")
    assert fs == 128.0  # resampled to the stream's 360 Hz inside beat_atrial_activity
    corr, normal = beat_atrial_activity(signal, fs, np.round(beat_times(folder, "learning-set/n01") * fs))
    assert corr.size > 60 and atrial_features(corr[20:], normal[20:])[P["p_consistent_normal"]] < 0.35


def test_trackers_follow_repeated_waves_and_refuse_bad_windows():
    t = np.linspace(0, 1, 100)
    p_wave = np.exp(-((t - 0.15) / 0.04) ** 2)
    tracker = PWaveTracker()
    assert tracker.correlate(p_wave) == 0.0  # nothing to compare the first beat with
    assert tracker.correlate(p_wave) > 0.99
    assert tracker.correlate(np.random.default_rng(0).standard_normal(100)) < 0.6
    narrow = p_wave + 3 * np.exp(-((t - 0.45) / 0.02) ** 2)  # a P wave, then a narrow QRS
    wide = p_wave + 2 * np.exp(-((t - 0.5) / 0.08) ** 2)  # a wide, late "ventricular" QRS
    qrs = QrsTracker()
    assert qrs.is_normal(narrow) and qrs.is_normal(narrow) and not qrs.is_normal(wide)
    atrial = AtrialTracker()
    assert atrial.observe(narrow) == (0.0, True) and atrial.observe(wide)[1] is False
    with pytest.raises(ValueError, match="at least 32"):
        tracker.correlate(np.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        tracker.correlate(np.full(100, np.nan))
    with pytest.raises(ValueError, match="at least 64"):
        qrs.is_normal(np.zeros(40))
    with pytest.raises(ValueError, match="non-empty"):
        atrial_features(np.zeros(0), np.zeros(0, bool))
    with pytest.raises(ValueError, match="normal-QRS flag"):
        atrial_features(np.zeros(5), np.zeros(4, bool))
