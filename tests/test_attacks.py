"""Attacks in the simulator, and robust strategies holding against them on real beats."""
import numpy as np
import pytest

from training.config import TrainConfig
from training.data.feature_sets import load_feature_beats
from training.federated.attacks import Attack, choose_attackers
from training.federated.local_training import LocalConfig
from training.federated.simulation import FederatedConfig, run_simulation
from training.federated.strategies import ClientUpdate


def test_attack_specs_and_transforms():
    u = ClientUpdate("d", [np.ones(3, np.float32)], 5)
    rng = np.random.default_rng(0)
    assert np.all(Attack.parse("sign_flip").corrupt(u, rng).delta[0] == -1)
    assert np.all(Attack.parse("scale:4").corrupt(u, rng).delta[0] == 4)
    assert Attack.parse("gaussian:2").corrupt(u, rng).delta[0].std() > 0
    assert Attack.parse("label_flip").corrupt(u, rng) is u
    assert list(Attack.parse("replacement").poison_labels(np.array([0, 1, 4]), 5)) == [1, 2, 0]
    with pytest.raises(ValueError, match="unknown"):
        Attack.parse("nice")
    assert len(choose_attackers(20, 0.3, 0)) == 6 and choose_attackers(20, 0.3, 0) == choose_attackers(20, 0.3, 0)


@pytest.mark.slow
def test_median_survives_a_scaling_attacker_that_wrecks_fedavg(mitdb_dir, cache_root):
    cfg = TrainConfig(seed=0)
    records = ["101", "106", "112", "115", "119", "203", "209", "223"]
    train = load_feature_beats(mitdb_dir, records, cache_root)
    val = load_feature_beats(mitdb_dir, ["118", "207"], cache_root)
    best = {}
    for strategy in ("fedavg", "median"):
        fed = FederatedConfig(rounds=3, strategy=strategy, local=LocalConfig(epochs=1), seed=0,
                              attack="scale:-30", attackers=0.25)
        best[strategy] = max(h["val_macro_f1"] for h in run_simulation(train, val, fed, cfg, progress=False).history)
    assert best["median"] > best["fedavg"] + 0.05, best
