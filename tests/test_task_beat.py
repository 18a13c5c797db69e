"""The beat task on the task interface gives the beat commands' results: the generic federated path trains the
same weights as `simulate`'s beat path for a fixed seed on a small real slice, and the beat task's splits are
the inter-patient protocol's."""
import numpy as np
import pytest

from training.config import TrainConfig
from training.data.feature_sets import load_feature_beats
from training.data.protocols import validation_records
from training.data.splits import DS1, DS2
from training.federated.local_training import LocalConfig
from training.federated.simulation import FederatedConfig, run_simulation
from training.tasks.beat import BeatTask
from training.tasks.federated import run_task_federated
from training.train import RRScaler

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slice_(mitdb_dir, cache_root):
    data = load_feature_beats(mitdb_dir, ("101", "106", "108", "109"), cache_root)
    data = data.subset(np.arange(0, len(data), 5))  # every fifth beat: the same code path, a fifth of the time
    return data.of_records(["101", "106", "108"]), data.of_records(["109"])


@pytest.mark.parametrize("strategy", ["scaffold"])  # FedAvg is SCAFFOLD without the control terms
def test_generic_path_trains_the_beat_paths_weights(slice_, strategy):
    train, val = slice_
    fed = FederatedConfig(rounds=2, strategy=strategy, local=LocalConfig(epochs=1), seed=0)
    beat_path = run_simulation(train, val, fed, TrainConfig(seed=0), progress=False)
    task = BeatTask()
    scaler = RRScaler.fit(train.rr)
    generic = run_task_federated(task, task.split_of(train, scaler), task.split_of(val, scaler), fed)
    for a, b in zip(beat_path.model.get_weights(), generic.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert generic.best_epoch == beat_path.best_epoch
    for old, new in zip(beat_path.history, generic.history):
        assert new["val_macro_f1"] == pytest.approx(old["val_macro_f1"], abs=1e-12)
        assert new["loss"] == pytest.approx(old["loss"], abs=1e-12)


def test_beat_task_splits_follow_the_inter_patient_protocol():
    task = BeatTask(max_persons=2)
    val = task.load("val", seed=0)
    assert set(val.persons) == set(validation_records(0)[:2])
    assert set(task.load("test").persons) == set(DS2[:2])
    train = task.load("train")
    assert set(train.persons) <= set(DS1) - set(validation_records(0))
    contract = task.edge_contract(train)
    assert contract.source == "beats" and len(contract.preprocessing["rr_mean"]) == train.inputs["rr"].shape[1]
    weights = task.sample_weights(train)
    assert weights.shape == (5,) and weights.min() > 0 and weights[0] < 1  # N weighs least
