"""The task interface's contract, for every registered task on a small real slice: the splits hold consistent
rows, validation persons are not training persons, the model takes the split's inputs, ``evaluate`` returns
the selection metric, the edge contract survives the metadata round trip, and NaN input is refused."""
import math

import keras
import numpy as np
import pytest

from edge_runtime.task_contract import EdgeContract
from training.tasks.base import SPLITS, TaskSplit
from training.tasks.fit import keras_predict
from training.tasks.registry import make_task, task_names

MAX_PERSONS = 3


@pytest.fixture(scope="module", params=task_names())
def loaded(request):
    task = make_task(request.param, max_persons=MAX_PERSONS)
    return task, {s: task.load(s, seed=0) for s in SPLITS}


def test_registry_lists_the_tasks_and_refuses_unknown_names():
    assert "tabular" in task_names() and "beat" in task_names()
    with pytest.raises(ValueError, match="known tasks"):
        make_task("no-such-task")
    with pytest.raises(ValueError):
        make_task(task_names()[0], max_persons=0)


def test_splits_are_consistent_and_capped(loaded):
    task, splits = loaded
    keys = set(splits["train"].inputs)
    for name, split in splits.items():
        assert len(split) > 0, f"{task.name}: {name} is empty"
        assert set(split.inputs) == keys, f"{task.name}: {name} inputs differ from train's"
        assert len(np.unique(split.persons)) <= MAX_PERSONS
        for k, v in split.inputs.items():
            assert v.shape[1:] == splits["train"].inputs[k].shape[1:], f"{task.name}: {name}.{k} row shape"
        assert len(task.training_targets(split)) == len(split)
    with pytest.raises(ValueError):
        task.load("validation")


def test_validation_and_test_persons_are_not_training_persons(loaded):
    task, splits = loaded
    train = set(splits["train"].persons)
    assert not train & set(splits["val"].persons), f"{task.name}: val persons also train"
    assert not train & set(splits["test"].persons), f"{task.name}: test persons also train"


def test_model_takes_the_split_inputs_and_evaluate_gives_the_selection_metric(loaded):
    task, splits = loaded
    keras.utils.set_random_seed(0)
    model = task.build_model(splits["train"], seed=0)
    assert {t.name for t in model.inputs} == set(splits["train"].inputs)
    assert len(model.weights) == len(model.trainable_variables), "local training needs no non-trainable weights"
    metrics = task.evaluate(keras_predict(model), splits["val"])
    assert task.selection_metric in metrics
    assert math.isfinite(float(metrics[task.selection_metric]))
    weights = task.sample_weights(splits["train"])
    if weights is not None:
        assert np.all(np.asarray(weights) > 0) and len(weights) >= int(splits["train"].targets.max()) + 1


def test_default_partition_covers_the_training_rows_once(loaded):
    task, splits = loaded
    parts = task.partition(splits["train"], "person", seed=0)
    rows = np.concatenate(parts)
    assert len(rows) == len(np.unique(rows)) == len(splits["train"])
    with pytest.raises(ValueError):
        task.partition(splits["train"], "no-such-partition:1", seed=0)


def test_edge_contract_round_trips_through_metadata(loaded):
    task, splits = loaded
    contract = task.edge_contract(splits["train"])
    assert contract.task == task.name
    assert EdgeContract.from_dict(contract.to_dict()) == contract
    with pytest.raises(ValueError, match="channels"):
        contract.check_source(len(contract.channels) + 1, contract.sample_rate_hz)
    row = task.describe()
    assert row["name"] == task.name and row["selection_metric"] == task.selection_metric


def test_nan_input_is_refused(loaded):
    task, splits = loaded
    train = splits["train"]
    key = next(k for k, v in train.inputs.items() if np.issubdtype(v.dtype, np.floating))
    bad = {k: v.copy() for k, v in train.inputs.items()}
    bad[key].reshape(len(train), -1)[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        TaskSplit(bad, train.targets, train.persons)
