"""One round engine: the in-process simulation and the MQTT aggregator give the same aggregate for the same
updates, with an outlier dropped each round and a privacy budget that stops the run."""
import numpy as np
import pytest

from broker.fed_messages import LocalUpdate
from broker.launcher import broker_url
from edge_runtime.fed_client import DeviceClient
from tests.federation_helpers import REGISTRY, FixedUpdater, initial_weights, run_to_end
from training.federated.aggregator import Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.in_process import run_in_process
from training.federated.privacy import epsilon
from training.federated.registry import make_fleet_strategy
from training.federated.round_engine import RoundEngine

FLEET = {**REGISTRY, "dev-x": 14}
#: DP-FedAvg with a budget that fits exactly two rounds (z = 1, no amplification); the same noise seed
ARGS = {"clip": 1.0, "noise_multiplier": 1.0, "delta": 1e-6, "seed": 5,
        "epsilon_budget": epsilon(1.0, 1.0, 2, 1e-6) * 1.000001}
ROUNDS = 5


class Exploding:
    """A device whose local training blew up without reaching NaN: the outlier screen must drop it."""

    def fit(self, model):
        return LocalUpdate([np.full_like(w, 1e6) for w in model.weights], num_examples=30, local_steps=3)


def _updaters():
    return {**{name: FixedUpdater(k) for k, name in enumerate(REGISTRY)}, "dev-x": Exploding()}


def _in_process():
    strategy = make_fleet_strategy("dp_fedavg", ARGS, len(FLEET), "seeded")  # both sides: the same noise
    engine = RoundEngine(strategy, list(FLEET), RoundPolicy(), ROUNDS, initial_weights(), seed=0)
    run_in_process(engine, _updaters())
    return engine


def _over_mqtt(url, run_dir):
    cfg = AggregatorConfig(fleet="one-engine", devices=dict(FLEET), rounds=ROUNDS, strategy="dp_fedavg",
                           strategy_args=ARGS, policy=RoundPolicy(deadline_s=60), dp_noise="seeded")
    agg = Aggregator(cfg, initial_weights(), url, run_dir)
    updaters = _updaters()
    return run_to_end(agg, [DeviceClient(name, dev_id, "one-engine", url, updaters[name])
                            for name, dev_id in FLEET.items()])


@pytest.mark.integration
def test_the_simulation_and_the_mqtt_aggregator_agree_with_an_outlier_and_a_budget_stop(mosquitto, tmp_path):
    engine = _in_process()
    deployed = _over_mqtt(broker_url(mosquitto), tmp_path)

    # the budget stops both after two of five rounds; the exploding device is dropped in each round
    assert len(engine.history) == len(deployed.history) == 2
    assert dict(engine.rejected) == deployed.rejected == {"outlier_norm": 2}
    assert [h["participants"] for h in engine.history] == [h["participants"] for h in deployed.history] == [4, 4]
    for got, want in zip(deployed.final_weights, engine.weights):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert not np.allclose(engine.weights[0], initial_weights()[0])  # the rounds did move the model
    for a, b in zip(engine.history, deployed.history):
        assert a["privacy"] == b["privacy"]
    assert deployed.history[-1]["privacy"]["epsilon_rdp"] <= ARGS["epsilon_budget"]
    assert deployed.history[-1]["privacy"]["sampling"] == "public"
