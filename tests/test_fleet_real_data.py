"""Real devices on real beats: Keras local training on four patients' records, rounds over Mosquitto."""
import numpy as np
import pytest

from broker.launcher import broker_url
from training.config import TrainConfig
from training.data.feature_sets import load_feature_beats
from training.federated.aggregator_config import RoundPolicy
from training.federated.fleet import FleetConfig, device_registry, run_fleet
from training.federated.local_training import LocalConfig
from training.federated.simulation import FederatedConfig, make_partition
from training.model import build_classifier
from training.train import RRScaler, evaluate_keras

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_fleet_of_patient_devices_learns_over_mosquitto(mitdb_dir, cache_root, mosquitto, tmp_path):
    cfg = TrainConfig(seed=0)
    train = load_feature_beats(mitdb_dir, ["106", "119", "209", "223"], cache_root)
    val = load_feature_beats(mitdb_dir, ["118", "207"], cache_root)
    fed = FederatedConfig(rounds=3, partition="patient", seed=0, local=LocalConfig(epochs=1))
    fleet_cfg = FleetConfig(federated=fed, policy=RoundPolicy(deadline_s=120), encoding="topk:0.2", chunk_size=1024,
                            broker_url=broker_url(mosquitto))
    result = run_fleet(train, val, None, fleet_cfg, cfg, tmp_path, progress=False)

    assert device_registry("patient", train, make_partition("patient", train, 0)) == \
        {"p106": 106, "p119": 119, "p209": 209, "p223": 223}
    history = result.trained.history
    assert [h["participants"] for h in history] == [4, 4, 4] and result.rejected == {}
    assert all(h["bytes_received"] > 0 for h in history)
    initial = build_classifier(train.waves.shape[1], train.rr.shape[1], 5, cfg.model)
    f1_initial = evaluate_keras(initial, val, RRScaler.fit(train.rr))["macro_f1"]
    assert max(h["val_macro_f1"] for h in history) > f1_initial + 0.1
    assert result.trained.best_epoch == 1 + int(np.argmax([h["val_macro_f1"] for h in history]))
    assert (tmp_path / "rounds.csv").is_file()
