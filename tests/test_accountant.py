"""The accountant composes the rounds actually run, one event each, and says what it assumes.

Reference values are computed here independently: dp-accounting's events composed one at a time (not the
accountant's grouping), and for unamplified rounds the exact Gaussian-DP curve (Dong, Roth & Su 2019): a
composition of Gaussian mechanisms with multipliers z_r is one Gaussian mechanism with μ = sqrt(Σ z_r^-2).
"""
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp
from scipy.optimize import brentq
from scipy.stats import norm

from training.federated.accountant import (Accountant, RoundCharge, Sampling, adaptive_clipping_sum_noise,
                                           epsilon_of_charges)
from training.federated.privacy import DPFedAvg
from training.federated.strategies import ClientUpdate, RoundContext

POISSON = Sampling.DEVICE_POISSON
ROUNDS = [RoundCharge(1, 1.2), RoundCharge(2, 1.1, POISSON, 0.01), RoundCharge(3, 1.1, POISSON, 0.01),
          RoundCharge(4, 1.3, POISSON, 0.02), RoundCharge(5, 2.0), RoundCharge(6, 1.1, POISSON, 0.01),
          RoundCharge(7, 0.9)]


def _gdp_epsilon(mu: float, delta: float) -> float:
    def excess(eps):
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta
    return brentq(excess, 0.0, 100.0)


def _one_by_one(charges, delta, accountant):
    acc = rdp.RdpAccountant() if accountant == "rdp" else pld.PLDAccountant(value_discretization_interval=1e-3)
    for c in charges:
        g = dp_accounting.GaussianDpEvent(c.noise_multiplier)
        acc.compose(g if c.sampling_rate == 1 else dp_accounting.PoissonSampledDpEvent(c.sampling_rate, g))
    return acc.get_epsilon(delta)


def test_heterogeneous_rounds_compose_as_dp_accounting_composes_them():
    for upto in range(1, len(ROUNDS) + 1):
        charges = ROUNDS[:upto]
        assert epsilon_of_charges(charges, 1e-6, "rdp") == pytest.approx(_one_by_one(charges, 1e-6, "rdp"), rel=1e-9)
    mixed = [ROUNDS[0], ROUNDS[1], ROUNDS[4], ROUNDS[2], ROUNDS[6]]  # PLD is slow: one mixed sequence
    assert epsilon_of_charges(mixed, 1e-6, "pld") == pytest.approx(_one_by_one(mixed, 1e-6, "pld"), rel=2e-3)


def test_unamplified_rounds_match_the_exact_gaussian_composition():
    zs = [1.2, 0.8, 2.0, 1.0, 3.0]
    mu = math.sqrt(sum(z ** -2 for z in zs))
    exact = _gdp_epsilon(mu, 1e-5)
    charges = [RoundCharge(r, z) for r, z in enumerate(zs, 1)]
    assert epsilon_of_charges(charges, 1e-5, "pld") == pytest.approx(exact, rel=0.01)
    assert exact <= epsilon_of_charges(charges, 1e-5, "rdp") < 1.3 * exact  # RDP: an upper bound, not far off


def test_the_reference_setting_is_reproduced():
    # ENVIRONMENT.md: RDP, Poisson q = 0.01, sigma = 1.1, 1000 steps, delta = 1e-5 -> 1.7118 (PLD 1.5154)
    charges = [RoundCharge(r, 1.1, POISSON, 0.01) for r in range(1, 1001)]
    assert epsilon_of_charges(charges, 1e-5, "rdp") == pytest.approx(1.7118, abs=1e-4)
    assert epsilon_of_charges(charges, 1e-5, "pld") == pytest.approx(1.5154, abs=1e-3)


def test_a_published_dp_fedavg_setting_is_reproduced_within_5_percent():
    # TensorFlow Federated's tutorial "Differential Privacy in TFF": federated EMNIST digits (3,383 clients),
    # Poisson sampling of 120 clients per round, z = 1.2, 100 rounds: "satisfies (2, 1e-5)-DP" (RDP)
    charges = [RoundCharge(r, 1.2, Sampling.DEVICE_POISSON, 120 / 3383) for r in range(1, 101)]
    assert epsilon_of_charges(charges, 1e-5, "rdp") == pytest.approx(2.0, rel=0.05)


def test_a_public_selection_is_never_amplified():
    with pytest.raises(ValueError, match="amplifies nothing"):
        RoundCharge(1, 1.0, Sampling.PUBLIC, 0.1)
    dp = DPFedAvg(num_devices=100, clip=1.0, noise_multiplier=1.0)
    dp.begin_round(RoundContext(1, registered=100, selected=10))  # 10 % of the fleet, but the list is on the bus
    dp.aggregate([np.zeros(3, np.float32)], [ClientUpdate(str(k), [np.ones(3, np.float32)], 1) for k in range(10)])
    row = dp.ledger[0]
    assert row["sampling"] == "public" and row["sampling_rate"] == 1.0 and "no amplification" in row["assumes"]
    assert row["epsilon_rdp"] == pytest.approx(_one_by_one([RoundCharge(1, 1.0)], 1e-6, "rdp"))


def test_epsilon_never_decreases_when_participants_drop():
    dp = DPFedAvg(num_devices=20, clip=1.0, noise_multiplier=1.5, delta=1e-6)
    g = [np.zeros(4, np.float32)]
    eps = []
    for rnd, delivered in enumerate([20, 12, 3, 20, 1], 1):  # selected 20 every round; fewer deliver
        dp.begin_round(RoundContext(rnd, 20, 20))
        dp.aggregate(g, [ClientUpdate(str(k), [np.ones(4, np.float32)], 1) for k in range(delivered)])
        eps.append(dp.ledger[-1]["epsilon_rdp"])
    assert all(b > a for a, b in zip(eps, eps[1:]))
    assert eps[-1] == pytest.approx(_one_by_one([RoundCharge(r, 1.5) for r in range(1, 6)], 1e-6, "rdp"))


def test_the_mean_divides_by_the_selection_not_by_who_delivered():
    dp = DPFedAvg(num_devices=10, clip=10.0, noise_multiplier=0.0)
    dp.begin_round(RoundContext(1, 10, selected=4))
    new = dp.aggregate([np.zeros(2, np.float32)], [ClientUpdate("a", [np.array([2.0, 4.0], np.float32)], 1)])
    np.testing.assert_allclose(new[0], [0.5, 1.0])  # one of four selected delivered: sum / 4
    assert dp.ledger[0]["denominator"] == 4 and dp.ledger[0]["epsilon_rdp"] is math.inf


def test_adaptive_clipping_pays_for_its_count():
    z, sigma_b = 1.0, 2.0
    z_sum = adaptive_clipping_sum_noise(z, sigma_b)
    assert z_sum == pytest.approx((1 / z ** 2 - 1 / (2 * sigma_b) ** 2) ** -0.5)
    # both releases together (sum with z_sum, centred count with 2 sigma_b) cost exactly one Gaussian with z
    both = dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z_sum),
                                          dp_accounting.GaussianDpEvent(2 * sigma_b)])
    acc = rdp.RdpAccountant()
    acc.compose(both)
    assert acc.get_epsilon(1e-6) == pytest.approx(_one_by_one([RoundCharge(1, z)], 1e-6, "rdp"), rel=1e-6)
    dp = DPFedAvg(num_devices=50, clip=1.0, noise_multiplier=z, adaptive_quantile=0.5, count_noise=sigma_b)
    assert dp.sum_z == pytest.approx(z_sum) and dp.charged_z == z
    with pytest.raises(ValueError, match="count_noise above"):
        DPFedAvg(num_devices=50, noise_multiplier=3.0, adaptive_quantile=0.5, count_noise=1.0)


def test_budget_and_restart_use_the_composed_ledger():
    acc = Accountant(1e-6)
    rows = [acc.charge(RoundCharge(r, z)) for r, z in enumerate([1.0, 2.0, 0.7], 1)]
    assert [r["round"] for r in rows] == [1, 2, 3] and rows[-1]["epsilon_rdp"] > rows[0]["epsilon_rdp"]
    again = Accountant(1e-6, list(acc.charges))
    assert again.epsilon("rdp") == acc.epsilon("rdp")
    assert acc.epsilon_if(ROUNDS[3]) == pytest.approx(_one_by_one([*acc.charges, ROUNDS[3]], 1e-6, "rdp"), rel=1e-9)
    one_round = _one_by_one([RoundCharge(1, 1.0)], 1e-6, "rdp")
    dp = DPFedAvg(num_devices=10, clip=1.0, noise_multiplier=1.0, epsilon_budget=one_round * 1.000001)
    assert dp.allows_round(RoundContext(1, 10, 10))
    dp.begin_round(RoundContext(1, 10, 10))
    dp.aggregate([np.zeros(1, np.float32)], [ClientUpdate("a", [np.ones(1, np.float32)], 1)])
    assert not dp.allows_round(RoundContext(2, 10, 10))


def test_a_checkpoint_of_the_old_ledger_is_charged_again_without_amplification():
    # the earlier ledger: (round, participants, clip, z, q, eps rdp, eps pld, delta), q = 5/20 claimed as Poisson
    old = np.array([[1, 5, 1.0, 1.2, 0.25, 0.9, 0.8, 1e-6], [2, 5, 1.0, 1.2, 0.25, 1.1, 1.0, 1e-6]])
    dp = DPFedAvg(num_devices=20, clip=1.0, noise_multiplier=1.2, delta=1e-6)
    dp.load_state({"clip": [np.array([1.0])], "ledger": [old]})
    assert [r["round"] for r in dp.ledger] == [1, 2] and dp.ledger[-1]["sampling_rate"] == 1.0
    want = _one_by_one([RoundCharge(1, 1.2), RoundCharge(2, 1.2)], 1e-6, "rdp")
    assert dp.ledger[-1]["epsilon_rdp"] == pytest.approx(want) and want > 1.1  # more than the old claim
