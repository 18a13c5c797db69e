"""The anomaly task: score/threshold/AUC arithmetic on hand-made scores, the real MIT-BIH slice (training sees
only N beats), bad inputs, and the device-side monitor flagging a real ventricular stretch."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.anomaly_score import AnomalyScoring
from edge_runtime.signal_config import RR_FEATURE_NAMES
from training.tasks.anomaly_metrics import aucs, choose_percentile, detection, roc_auc, threshold_at

N_RR = len(RR_FEATURE_NAMES)


# ---------------------------------------------------------------- arithmetic on hand-made scores
def test_roc_auc_counts_pairs_and_ties():
    assert roc_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert roc_auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert roc_auc([1.0, 3.0], [2.0]) == 0.5  # one pair won, one lost
    assert roc_auc([2.0], [2.0, 2.0]) == 0.5  # ties count one half
    assert roc_auc([2.0, 5.0], [1.0, 2.0, 6.0]) == pytest.approx((1 + 0.5 + 0 + 1 + 1 + 0) / 6)
    assert math.isnan(roc_auc([], [1.0]))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([np.nan], [1.0])


def test_threshold_and_detection_at_it():
    normal = np.arange(1, 101, dtype=float)
    assert threshold_at(normal, 90) == pytest.approx(90.1)
    with pytest.raises(ValueError, match="percentile"):
        threshold_at(normal, 100)
    with pytest.raises(ValueError, match="no normal beats"):
        threshold_at([], 99)
    scores = np.array([0.1, 0.2, 0.3, 5.0, 0.9, 6.0, 7.0, 0.2])
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 3])  # N N N N(false alarm) S S V F
    d = detection(scores, labels, threshold=1.0, class_names=("N", "S", "V", "F"))
    assert d["false_alarm_rate"] == 0.25
    assert d["se_S"] == 0.5 and d["ppv_S"] == 0.5  # 1 S hit against 1 flagged N
    assert d["se_V"] == 1.0 and d["ppv_V"] == 0.5
    assert d["se_F"] == 0.0
    assert d["se_abnormal"] == 0.5 and d["ppv_abnormal"] == pytest.approx(2 / 3)
    a = aucs(scores, labels, ("N", "S", "V", "F"))
    assert a["auc_V"] == 1.0 and a["auc_S"] == pytest.approx((3 + 4) / 8)


def test_choose_percentile_maximises_validation_f1():
    rng = np.random.default_rng(0)
    normal = rng.uniform(0, 1, 1000)
    abnormal = np.full(30, 0.985)  # just above the 97.5th percentile, below the 99th
    scores = np.concatenate([normal, abnormal])
    labels = np.r_[np.zeros(1000, int), np.ones(30, int)]
    p, t = choose_percentile(scores, labels, (90.0, 97.5, 99.0))
    assert p == 97.5 and t == pytest.approx(np.percentile(normal, 97.5))


def test_score_is_wave_error_plus_weighted_rr_error():
    s = AnomalyScoring(window=4, rr_mean=(0.0,) * N_RR, rr_std=(1.0,) * N_RR, rr_weight=2.0)
    waves, rr = s.inputs(np.array([[1, 1, 1, 1]], float), np.ones((1, N_RR)))
    recon = np.zeros((1, 4 + N_RR))
    recon[0, :4] = [1, 1, 1, 3]  # wave error (0+0+0+4)/4 = 1
    recon[0, 4:] = 0.0  # RR error mean(1) = 1, weighted 2
    assert s.scores(waves, rr, recon)[0] == pytest.approx(3.0)
    assert AnomalyScoring.from_dict(s.with_threshold(2.5, 99).to_dict()).threshold == 2.5


@pytest.mark.parametrize("wave, rr, match", [
    (np.full((1, 4), np.nan), np.ones((1, N_RR)), "NaN"),
    (np.ones((1, 5)), np.ones((1, N_RR)), r"shape \(n, 4\)"),
    (np.ones((1, 4)), np.ones((1, N_RR - 1)), "RR features must have shape"),
    (np.ones(4), np.ones((1, N_RR)), r"shape \(n, 4\)"),
])
def test_bad_beats_give_clear_errors(wave, rr, match):
    s = AnomalyScoring(window=4, rr_mean=(0.0,) * N_RR, rr_std=(1.0,) * N_RR)
    with pytest.raises(ValueError, match=match):
        s.inputs(wave, rr)


def test_bad_constants_are_refused():
    with pytest.raises(ValueError, match="rr_std"):
        AnomalyScoring(window=4, rr_mean=(0.0,) * N_RR, rr_std=(0.0,) * N_RR)
    with pytest.raises(ValueError, match="malformed"):
        AnomalyScoring.from_dict({"window": 4})


# ---------------------------------------------------------------- the real MIT-BIH slice
@pytest.fixture(scope="module")
def task():
    if not os.environ.get("MITDB_DIR"):
        pytest.skip("MITDB_DIR not set")
    from training.tasks.registry import make_task

    return make_task("anomaly", max_persons=3)


def test_training_sees_only_normal_beats_of_ds1_training_persons(task):
    from training.data.protocols import validation_records
    from training.data.splits import DS1, DS2

    train, val, test = (task.load(s, seed=0) for s in ("train", "val", "test"))
    raw = task.beats("train", 0)
    assert set(raw.labels.tolist()) == {0} and len(raw) == len(train) > 1000  # N only, on the real rows
    assert set(train.targets.tolist()) == {0}
    persons = set(train.persons.tolist())
    assert persons <= set(DS1) and not persons & set(validation_records(0)) and not persons & set(DS2)
    assert set(val.persons.tolist()) <= set(validation_records(0))
    assert set(test.persons.tolist()) <= set(DS2)
    assert {1, 2} <= set(test.targets.tolist())  # S and V beats are scored on test
    target = task.training_targets(train)
    assert target.shape == (len(train), task.signal.window_length + N_RR)
    np.testing.assert_array_equal(target[:, :task.signal.window_length], train.inputs["wave"])


def test_unknown_split_is_refused(task):
    with pytest.raises(ValueError, match="split must be one of"):
        task.load("dev")
