"""A small in-process federation on real beats: every strategy runs, improves on the initial model."""
import numpy as np
import pytest

from training.config import TrainConfig
from training.data.feature_sets import load_feature_beats
from training.federated.local_training import LocalConfig
from training.federated.simulation import (
    FederatedConfig,
    make_partition,
    run_simulation,
)
from training.model import build_classifier
from training.train import RRScaler, evaluate_keras

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def beats(mitdb_dir, cache_root):
    train = load_feature_beats(mitdb_dir, ["106", "119", "209", "223"], cache_root)
    val = load_feature_beats(mitdb_dir, ["118", "207"], cache_root)
    return train, val


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fednova", "scaffold", "fedavgm", "fedadam"])
def test_three_rounds_of_each_strategy_beat_the_initial_model(beats, strategy):
    train, val = beats
    base = TrainConfig(seed=0)
    args = {"fedadam": {"server_lr": 0.01}, "fedavgm": {"momentum": 0.5}}.get(strategy, {})
    fed = FederatedConfig(rounds=3, strategy=strategy, strategy_args=args, local=LocalConfig(epochs=1),
                          partition="patient", seed=0)
    initial = build_classifier(train.waves.shape[1], train.rr.shape[1], 5, base.model)
    f1_initial = evaluate_keras(initial, val, RRScaler.fit(train.rr))["macro_f1"]
    result = run_simulation(train, val, fed, base, progress=False)
    assert [h["round"] for h in result.history] == [1, 2, 3]
    assert all(h["participants"] == 4 for h in result.history)  # one device per record
    assert all(np.all(np.isfinite(w)) for w in result.model.get_weights())
    best = max(h["val_macro_f1"] for h in result.history)
    assert best > f1_initial + 0.1, f"{strategy}: best {best:.3f} vs initial {f1_initial:.3f}"


def test_partition_specs(beats):
    train, _ = beats
    assert len(make_partition("patient", train, 0)) == 4
    assert len(make_partition("iid:5", train, 0)) == 5
    assert len(make_partition("dirichlet:0.5:3", train, 0)) == 3
    with pytest.raises(ValueError, match="not understood"):
        make_partition("random", train, 0)


def test_dp_fedavg_rounds_carry_their_privacy_ledger_into_the_report(beats):
    from tools.report import privacy_ledger

    train, val = beats
    fed = FederatedConfig(rounds=2, strategy="dp_fedavg", strategy_args={"clip": 1.0, "noise_multiplier": 1.0},
                          local=LocalConfig(epochs=1), seed=0)
    history = run_simulation(train, val, fed, TrainConfig(seed=0), progress=False).history
    spent = [h["privacy"] for h in history]
    assert [p["round"] for p in spent] == [1, 2] and all(p["participants"] == 4 for p in spent)
    assert 0 < spent[0]["epsilon_rdp"] < spent[1]["epsilon_rdp"]  # composition over rounds
    page = privacy_ledger({"protocols": {"inter": {"runs": [{"seed": 0, "history": history}]}}})
    assert "## Privacy ledger" in page and "epsilon rdp" in page
    assert page.count("\n| 1 |") == 1 and page.count("\n| 2 |") == 1  # one row per round
    assert privacy_ledger({"protocols": {"inter": {"runs": [{"seed": 0, "history": [{"round": 1}]}]}}}) == ""
