"""The tabular task's model-selection protocol: the cross-validation folds (disjoint, stratified, only non-test
patients) and the stated choice rule (best mean, ties within the tolerance -> fewest parameters)."""
import numpy as np
import pytest

from training.tasks.tabular import TabularTask
from training.tasks.tabular_selection import (
    CANDIDATES,
    FOLDS,
    REPEATS,
    Candidate,
    choose,
    cross_validate,
    cv_folds,
    training_side,
)


def test_folds_are_disjoint_stratified_and_never_touch_the_test_split():
    _, y, persons = training_side()
    assert not set(persons) & set(TabularTask().load("test").persons)
    assert len(y) == 456 and len(set(persons)) == len(y)
    folds = cv_folds(y)
    assert len(folds) == FOLDS * REPEATS
    for r in range(REPEATS):
        held = [folds[r * FOLDS + k][1] for k in range(FOLDS)]
        together = np.concatenate(held)
        assert len(together) == len(y) and len(np.unique(together)) == len(y)  # each patient held out once per repeat
        for fit, out in folds[r * FOLDS:(r + 1) * FOLDS]:
            assert not set(fit) & set(out) and len(fit) + len(out) == len(y)
            # stratified: each held-out fold's malignant count is within one patient of its share
            assert abs(np.sum(y[out] == 0) - np.mean(y == 0) * len(out)) <= 1.0
    assert not all(np.array_equal(folds[k][1], folds[FOLDS + k][1]) for k in range(FOLDS))  # repeats reshuffle


def test_the_rule_prefers_fewer_parameters_within_the_tolerance_and_skips_context_rows():
    row = lambda hidden, mean, selectable=True: {"hidden": hidden, "mean": mean, "selectable": selectable,  # noqa: E731
                                                "parameters": Candidate(hidden).parameters()}
    assert choose([row(0, 0.975), row(8, 0.979), row(16, 0.978)])["hidden"] == 0
    assert choose([row(0, 0.970), row(8, 0.979), row(16, 0.978)])["hidden"] == 8
    assert choose([row(0, 0.970), row(8, 0.979), row(16, 0.999, selectable=False)])["hidden"] == 8
    with pytest.raises(ValueError, match="selectable"):
        choose([row(8, 0.9, selectable=False)])
    assert Candidate(0).parameters() == 62 and Candidate(8).parameters() == 266
    assert sum(c.selectable for c in CANDIDATES) == 3


def test_cross_validation_scores_every_fold_on_real_rows():
    x, y, _ = training_side()
    rows = cross_validate(x, y, candidates=(Candidate(0),))
    assert len(rows[0]["folds"]) == FOLDS * REPEATS and 0.9 < rows[0]["mean"] <= 1.0
