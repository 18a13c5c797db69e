"""Secure aggregation with real devices: Keras local training on four patients, masked sums over Mosquitto."""
import pytest

from broker.launcher import broker_url
from training.config import TrainConfig
from training.data.feature_sets import load_feature_beats
from training.federated.aggregator_config import RoundPolicy
from training.federated.fleet import FleetConfig, run_fleet
from training.federated.local_training import LocalConfig
from training.federated.secagg_round import SecAggSettings
from training.federated.simulation import FederatedConfig
from training.model import build_classifier
from training.train import RRScaler, evaluate_keras

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_a_secure_fleet_of_patient_devices_learns_over_mosquitto(mitdb_dir, cache_root, mosquitto, tmp_path):
    cfg = TrainConfig(seed=0)
    train = load_feature_beats(mitdb_dir, ["106", "119", "209", "223"], cache_root)
    val = load_feature_beats(mitdb_dir, ["118", "207"], cache_root)
    fed = FederatedConfig(rounds=3, partition="patient", seed=0, local=LocalConfig(epochs=1))
    fleet_cfg = FleetConfig(federated=fed, policy=RoundPolicy(deadline_s=120), broker_url=broker_url(mosquitto),
                            secagg=SecAggSettings(clip=5.0))
    result = run_fleet(train, val, None, fleet_cfg, cfg, tmp_path, progress=False)

    history = result.trained.history
    assert [h["participants"] for h in history] == [4, 4, 4] and result.rejected == {}
    assert all(h["secagg"]["failed"] is None and h["secagg"]["threshold"] == 3 for h in history)
    initial = build_classifier(train.waves.shape[1], train.rr.shape[1], 5, cfg.model)
    f1_initial = evaluate_keras(initial, val, RRScaler.fit(train.rr))["macro_f1"]
    assert max(h["val_macro_f1"] for h in history) > f1_initial + 0.1
