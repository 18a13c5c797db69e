import numpy as np
import pytest

from edge_runtime.metrics import classification_report, confusion_matrix
from training.data.partition import partition_by_patient, partition_dirichlet, partition_iid


def test_patient_partition_is_one_device_per_record():
    records = np.array(["101", "101", "106", "108", "106"])
    parts = partition_by_patient(records)
    assert [p.tolist() for p in parts] == [[0, 1], [2, 4], [3]]


def test_iid_partition_covers_every_beat_once():
    parts = partition_iid(103, 5, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))
    assert max(p.size for p in parts) - min(p.size for p in parts) <= 1


def test_dirichlet_partition_skews_labels_and_covers_all():
    labels = np.repeat(np.arange(4), 250)
    parts = partition_dirichlet(labels, 8, alpha=0.1, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))
    dominant = [np.bincount(labels[p], minlength=4).max() / p.size for p in parts]
    assert np.mean(dominant) > 0.6  # alpha = 0.1: devices are dominated by one class
    with pytest.raises(ValueError, match="alpha"):
        partition_dirichlet(labels, 8, alpha=0.0, seed=0)


def test_metrics_by_hand():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 2, 2])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[3, 1, 0], [1, 1, 0], [0, 0, 2]]
    rep = classification_report(y_true, y_pred, ["N", "S", "V", "F"], macro_over=["N", "S", "V", "F"])
    assert rep["per_class"]["N"]["se"] == pytest.approx(0.75)
    assert rep["per_class"]["N"]["ppv"] == pytest.approx(0.75)
    assert rep["per_class"]["S"]["se"] == pytest.approx(0.5) and rep["per_class"]["S"]["ppv"] == pytest.approx(0.5)
    assert rep["per_class"]["F"]["se"] is None  # no reference F beats: not scored
    assert rep["macro_f1"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    assert rep["accuracy"] == pytest.approx(6 / 8)
