"""The tabular task end to end on real data: the hospitals' partition, one federated round over a real
Mosquitto, an int8 export the edge-side interpreter runs, DP-SGD's accounting, and bad input refused."""
import numpy as np
import pytest

from broker.launcher import broker_url
from edge_runtime.tabular_records import TabularScorer
from edge_runtime.task_model import TaskInterpreter
from training.federated.fleet import FleetConfig
from training.federated.local_training import LocalConfig
from training.federated.simulation import FederatedConfig
from training.tasks.base import TaskSplit
from training.tasks.export import export_task
from training.tasks.federated import run_task_federated
from training.tasks.tabular import HOSPITAL_SHARES, TabularTask


@pytest.fixture(scope="module")
def splits():
    task = TabularTask()
    return task, task.load("train"), task.load("val"), task.load("test")


def test_four_hospitals_in_the_stated_shares_and_a_label_skewed_variant(splits):
    task, train, val, test = splits
    assert len(train) + len(val) + len(test) == 569
    assert not set(test.persons) & (set(train.persons) | set(val.persons))
    sizes = np.array([len(p) for p in task.partition(train, "hospitals", 0)])
    np.testing.assert_allclose(sizes / sizes.sum(), HOSPITAL_SHARES, atol=0.01)
    skewed = task.partition(train, "hospitals-skewed", 0)
    np.testing.assert_allclose([len(p) / len(train) for p in skewed], HOSPITAL_SHARES, atol=0.01)
    benign = [train.targets[p].mean() for p in skewed]
    assert benign[0] < 0.3 and benign[-1] > 0.9  # hospital 1 mostly malignant, hospital 4 benign
    with pytest.raises(ValueError, match="hospitals"):
        task.partition(train, "dirichlet:0.5:4", 0)


@pytest.mark.integration
def test_a_federated_round_over_mosquitto_and_an_int8_export_the_edge_runs(splits, mosquitto, tmp_path):
    task, train, val, test = splits
    fed = FederatedConfig(rounds=2, partition="hospitals", local=LocalConfig(epochs=2, batch_size=16,
                                                                             learning_rate=0.1))
    trained = run_task_federated(task, train, val, fed, over_mqtt=True,
                                 fleet=FleetConfig(broker_url=broker_url(mosquitto)), run_dir=tmp_path / "fleet")
    assert trained.info["devices"] == 4 and trained.info["transport"] == "mqtt"
    assert [r["participants"] for r in trained.history] == [4, 4]
    assert trained.best_epoch in (1, 2) and trained.evaluate(val)["accuracy"] > 0.8
    exported = export_task(trained, train, tmp_path, "int8")
    assert exported.metadata.extra["task"]["source"] == "tabular"
    edge = TaskInterpreter.from_file(exported.tflite_path)
    keras_acc = trained.evaluate(test)["accuracy"]
    assert abs(task.evaluate(edge.predict, test)["accuracy"] - keras_acc) <= 0.03
    with pytest.raises(ValueError, match="NaN"):
        edge.predict({"features": np.full((1, 30), np.nan, np.float32)})
    with pytest.raises(ValueError, match="shape"):
        edge.predict({"features": np.zeros((1, 29), np.float32)})
    # the device side on raw CSV records: standardised with the contract, bad lines counted and skipped
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    rows = test.persons[:5]
    index = [int(p.split("/")[1]) for p in rows]
    lines = [",".join(raw.feature_names)] + [",".join(f"{v:.17g}" for v in raw.data[i]) for i in index]
    lines += ["1,2,3", ",".join(["nan"] * 30)]
    scorer = TabularScorer(edge)
    scored = list(scorer.score(lines))
    assert [r["class"] for r in scored] == [task.class_names[c] for c in
                                            np.argmax(edge.predict({"features": test.inputs["features"][:5]}), 1)]
    assert scorer.stats.scored == 5 and scorer.stats.malformed == 2


def test_bad_records_are_refused(splits):
    task, train, *_ = splits
    contract = task.edge_contract(train)
    with pytest.raises(ValueError, match="30 channels"):
        contract.check_source(29, None)
    x = train.inputs["features"].copy()
    x[0, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        TaskSplit({"features": x}, train.targets, train.persons)


def test_log1p_features_reach_the_device_through_the_contract_and_last_round_keeps_the_last(tmp_path):
    """The log(1 + x) transform: the task trains on it, the export's contract names it, the device applies it to
    raw CSV records (a negative field, which log(1 + x) of sizes cannot take, is counted and skipped);
    ``last_round=True`` keeps the last round whatever the validation patients say."""
    from sklearn.datasets import load_breast_cancer

    task = TabularTask(transform="log1p")
    train, val, test = (task.load(s) for s in ("train", "val", "test"))
    fed = FederatedConfig(rounds=2, partition="hospitals", local=LocalConfig(epochs=1, batch_size=16,
                                                                             learning_rate=0.5))
    trained = run_task_federated(task, train, val, fed, last_round=True)
    assert trained.best_epoch == 2 and trained.evaluate(val)["accuracy"] > 0.8
    exported = export_task(trained, train, tmp_path, "int8")
    assert exported.metadata.extra["task"]["preprocessing"]["transform"] == "log1p"
    edge = TaskInterpreter.from_file(exported.tflite_path)
    raw = load_breast_cancer()
    index = [int(p.split("/")[1]) for p in test.persons[:4]]
    lines = [",".join(f"{v:.17g}" for v in raw.data[i]) for i in index] + [",".join(["-2"] * 30)]
    scorer = TabularScorer(edge)
    scored = list(scorer.score(lines))
    expected = np.argmax(edge.predict({"features": test.inputs["features"][:4]}), 1)
    assert [r["class"] for r in scored] == [task.class_names[c] for c in expected]
    assert scorer.stats.malformed == 1 and "negative" in next(iter(scorer.stats.reasons))
    with pytest.raises(ValueError, match="transform"):
        TabularTask(transform="sqrt")
