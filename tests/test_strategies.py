"""Strategies on hand-computed arrays (Prepare / Execute / Assert)."""
import numpy as np
import pytest

from training.federated.registry import STRATEGIES, make_strategy
from training.federated.strategies import (ClientUpdate, FedAdam, FedAvg, FedAvgM, FedNova, FedProx, InvalidUpdate,
                                           Scaffold)

G = [np.array([1.0, 2.0], np.float32), np.array([[0.0]], np.float32)]


def _u(device, d0, d1, n, steps=1, control=None):
    return ClientUpdate(device, [np.array(d0, np.float32), np.array([[d1]], np.float32)], n, steps, control)


def test_fedavg_is_the_sample_weighted_mean():
    new = FedAvg().aggregate(G, [_u("a", [1, 0], 2, n=1), _u("b", [4, 3], -1, n=2)])
    np.testing.assert_allclose(new[0], [1 + (1 + 8) / 3, 2 + 6 / 3])
    np.testing.assert_allclose(new[1], [[(2 - 2) / 3]])


def test_empty_round_keeps_the_model():
    new = FedAvg().aggregate(G, [])
    assert all(np.array_equal(a, b) for a, b in zip(new, G)) and new[0] is not G[0]


def test_fedprox_aggregates_like_fedavg_and_tells_devices_mu():
    ups = [_u("a", [1, 0], 2, n=1), _u("b", [4, 3], -1, n=2)]
    s = FedProx(proximal_mu=0.1)
    assert s.client_config() == {"proximal_mu": 0.1}
    for x, y in zip(s.aggregate(G, ups), FedAvg().aggregate(G, ups)):
        np.testing.assert_array_equal(x, y)


def test_fednova_normalizes_by_local_steps():
    # a: 1 example, 1 step, delta 2; b: 1 example, 4 steps, delta 8 -> per-step 2 and 2; tau_eff 2.5
    new = FedNova().aggregate(G, [_u("a", [2, 2], 0, n=1, steps=1), _u("b", [8, 8], 0, n=1, steps=4)])
    np.testing.assert_allclose(new[0], [1 + 2.5 * 2, 2 + 2.5 * 2])


def test_scaffold_updates_weights_and_control_variate():
    c = [np.array([1.0, 1.0], np.float32), np.array([[2.0]], np.float32)]
    s = Scaffold(num_devices=4)
    new = s.aggregate(G, [_u("a", [2, 0], 0, n=5, control=c), _u("b", [0, 2], 0, n=1, control=c)])
    np.testing.assert_allclose(new[0], [2, 3])  # unweighted mean of deltas
    np.testing.assert_allclose(s.server_control(G)[0], [0.5, 0.5])  # (2/4) * mean(dc)
    np.testing.assert_allclose(s.server_control(G)[1], [[1.0]])
    with pytest.raises(InvalidUpdate, match="control_delta"):
        s.aggregate(G, [_u("a", [1, 1], 0, n=1)])


def test_server_momentum_accumulates_and_restores_from_state():
    s = FedAvgM(server_lr=1.0, momentum=0.5)
    w1 = s.aggregate(G, [_u("a", [2, 2], 0, n=1)])
    w2 = s.aggregate(w1, [_u("a", [2, 2], 0, n=1)])
    np.testing.assert_allclose(w2[0], [1 + 2 + 3, 2 + 2 + 3])  # v: 2, then 0.5*2 + 2
    resumed = FedAvgM(server_lr=1.0, momentum=0.5)
    resumed.load_state(s.state())
    np.testing.assert_allclose(resumed.aggregate(G, [_u("a", [0, 0], 0, n=1)])[0], [1 + 1.5, 2 + 1.5])


def test_fedadam_first_step_by_hand():
    s = FedAdam(server_lr=0.1, beta1=0.9, beta2=0.99, tau=0.0)
    new = s.aggregate(G, [_u("a", [2, -2], 1, n=1)])
    # m = 0.1 d, v = 0.01 d^2 -> m / sqrt(v) = sign(d)
    np.testing.assert_allclose(new[0], [1.1, 1.9], rtol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (_u("x", [np.nan, 0], 0, n=1), "NaN"),
    (ClientUpdate("x", [np.zeros(3, np.float32), np.zeros((1, 1), np.float32)], 1), "shapes"),
    (_u("x", [0, 0], 0, n=0), "positive"),
])
def test_invalid_updates_are_refused(bad, message):
    with pytest.raises(InvalidUpdate, match=message):
        FedAvg().aggregate(G, [bad])


def test_strategies_are_chosen_by_name():
    assert set(STRATEGIES) == {"fedavg", "fedprox", "fednova", "scaffold", "fedavgm", "fedadam",
                               "median", "trimmed_mean", "krum", "norm_bounded", "cosine_filter", "dp_fedavg",
                               "fedbuff"}
    assert isinstance(make_strategy("fedprox", proximal_mu=0.2), FedProx)
    with pytest.raises(ValueError, match="choose one of"):
        make_strategy("fedsgd")
