"""The tabular task's feature-transform / round-policy protocol: the stated rules (a change must beat the
shipped setting by more than the tolerance), the non-test side it folds, and what "all-last" trains on."""
import numpy as np

from tools.task_bench.tabular import _training_rows
from training.tasks.tabular import TabularTask
from training.tasks.tabular_pipeline_selection import (
    MODES,
    POLICIES,
    TRANSFORMS,
    choose,
    non_test_side,
)


def _rows(means: dict) -> list[dict]:
    """Every (transform, mode, policy) at 0.95 unless ``means`` says otherwise."""
    return [{"transform": t, "mode": m, "policy": p, "mean": means.get((t, m, p), 0.95)}
            for t in TRANSFORMS for m in MODES for p in POLICIES]


def test_the_shipped_setting_stays_unless_beaten_by_more_than_the_tolerance():
    assert choose(_rows({})) == {"transform": "standard", "transform_scores": {"standard": 0.95, "log1p": 0.95},
                                 "policy": {"fedavg": "val-round", "dp": "val-round"}}
    # log1p better by 0.4 pp on average: a tie, standard stays; by 0.6 pp: log1p
    assert choose(_rows({("log1p", "dp", "val-round"): 0.958}))["transform"] == "standard"
    assert choose(_rows({("log1p", "dp", "val-round"): 0.962}))["transform"] == "log1p"
    # the policy is chosen under the chosen transform, per mode, the best of those beating val-round by > 0.5 pp
    picked = choose(_rows({("standard", "dp", "all-last"): 0.97, ("standard", "dp", "last-round"): 0.96,
                           ("standard", "fedavg", "all-last"): 0.954, ("log1p", "fedavg", "all-last"): 0.99}))
    assert picked["policy"] == {"fedavg": "val-round", "dp": "all-last"}


def test_the_folded_side_is_train_and_val_patients_never_test():
    side = non_test_side("log1p")
    task = TabularTask(transform="log1p")
    assert len(side.y) == 456 and side.is_val.sum() == len(task.load("val"))
    assert not set(side.persons) & set(task.load("test").persons)
    assert set(side.persons[side.is_val]) == set(task.load("val").persons)


def test_all_last_trains_the_validation_patients_in_their_own_hospitals():
    task = TabularTask()
    train, val = task.load("train"), task.load("val")
    assert _training_rows(train, val, "val-round") is train and _training_rows(train, val, "last-round") is train
    joined = _training_rows(train, val, "all-last")
    assert len(joined) == len(train) + len(val)
    sizes = [len(d) for d in task.partition(joined, "hospitals", 0)]
    assert sum(sizes) == len(joined) and len(sizes) == 4
    assert np.all(np.diff(sizes) < 0)  # 35 / 25 / 22 / 18 % still
