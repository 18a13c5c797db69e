"""DP-FedAvg: clipping, calibrated noise, a real accountant, and a budget the aggregator obeys."""
import numpy as np
import pytest

from tests.federation_helpers import expected_fedavg
from tests.test_federation_mqtt import Federation
from training.federated.privacy import DPFedAvg, epsilon
from training.federated.strategies import ClientUpdate

pytestmark = pytest.mark.integration


def test_accountant_reproduces_the_reference_values():
    # q = 0.01, sigma = 1.1, 1000 steps, delta = 1e-5 (dp-accounting's own numbers for this setting)
    assert epsilon(1.1, 0.01, 1000, 1e-5, "rdp") == pytest.approx(1.7118, abs=1e-4)
    assert epsilon(1.1, 0.01, 1000, 1e-5, "pld") == pytest.approx(1.5154, abs=1e-3)
    assert epsilon(1.1, 0.5, 10, 1e-6) > epsilon(1.1, 0.5, 5, 1e-6) > 0


def test_without_noise_it_is_the_mean_of_clipped_deltas():
    g = [np.zeros(4, np.float32)]
    ups = [ClientUpdate("a", [np.array([3, 4, 0, 0], np.float32)], 100),  # norm 5 -> clipped to 1
           ClientUpdate("b", [np.array([0.1, 0, 0, 0], np.float32)], 1)]
    new = DPFedAvg(num_devices=2, clip=1.0, noise_multiplier=0.0).aggregate(g, ups)
    np.testing.assert_allclose(new[0], [(0.6 + 0.1) / 2, 0.8 / 2, 0, 0], atol=1e-6)


def test_noise_has_the_calibrated_spread_and_the_ledger_grows():
    g = [np.zeros(20000, np.float32)]
    ups = [ClientUpdate(str(k), [np.zeros(20000, np.float32)], 1) for k in range(10)]
    dp = DPFedAvg(num_devices=20, clip=0.5, noise_multiplier=1.2, delta=1e-6, noise="seeded", seed=3)
    new = dp.aggregate(g, ups)
    assert np.std(new[0]) == pytest.approx(1.2 * 0.5 / 10, rel=0.03)
    # the selection is public: no amplification is claimed (q = 1), whatever share of the fleet took part
    assert len(dp.ledger) == 1 and dp.ledger[0]["sampling_rate"] == 1.0 and dp.ledger[0]["epsilon_rdp"] > 0
    state = dp.state()
    again = DPFedAvg(num_devices=20, clip=0.5, noise_multiplier=1.2, delta=1e-6)
    again.load_state(state)
    assert again.ledger == dp.ledger and again.accountant.epsilon() == dp.accountant.epsilon()


def test_adaptive_clipping_moves_towards_the_quantile():
    g = [np.zeros(2, np.float32)]
    ups = [ClientUpdate(str(k), [np.array([3.0, 4.0], np.float32)], 1) for k in range(50)]  # all norms 5
    dp = DPFedAvg(num_devices=50, clip=0.5, noise_multiplier=0.5, adaptive_quantile=0.5, count_noise=0.0)
    for _ in range(10):
        dp.aggregate(g, ups)
    assert dp.clip > 0.5 * np.exp(0.2 * 0.5 * 9)  # every round none fit: C grows by e^(0.1)


def test_the_aggregator_stops_before_the_budget_is_exceeded(mosquitto, tmp_path):
    plain = Federation(mosquitto, tmp_path / "a", "dp-free", rounds=2, strategy="dp_fedavg",
                       strategy_args={"clip": 1e6, "noise_multiplier": 0.0}).start().finish()
    for got, want in zip(plain.final_weights, expected_fedavg(2)):
        assert np.abs(got - want).max() < 0.05  # unweighted mean of unclipped deltas: near FedAvg here
    assert plain.history[-1]["privacy"]["epsilon_rdp"] is None  # no noise, no privacy: said so
    budget = epsilon(1.0, 1.0, 2, 1e-6) + 1e-6  # exactly two rounds fit
    tight = Federation(mosquitto, tmp_path / "b", "dp-tight", rounds=5, strategy="dp_fedavg",
                       strategy_args={"clip": 1.0, "noise_multiplier": 1.0, "epsilon_budget": budget}).start().finish()
    assert len(tight.history) == 2
    assert tight.history[-1]["privacy"]["epsilon_rdp"] <= budget
