"""Local DP on the device: clipping bound, noise statistics, ε against dp-accounting, and over Mosquitto."""
import math
import threading

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp

from broker.launcher import broker_url
from edge_runtime.fed_client import DeviceClient
from edge_runtime.local_dp import LocalDP, PrivacyLedger, gaussian_epsilon, gdp_epsilon
from tests.federation_helpers import REGISTRY, FixedUpdater, delta_for, initial_weights
from training.federated.aggregator import Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy


def test_clipping_bounds_the_norm_and_leaves_short_deltas_alone():
    dp = LocalDP(clip=0.5, noise_multiplier=1e-9)  # noise negligible: what is left is the clipping
    long_ = [np.full((3, 4), 2.0, np.float32), np.full(5, -1.0, np.float32)]
    out = dp.privatize(long_, np.random.default_rng(0))
    assert math.sqrt(sum(float(np.sum(o.astype(np.float64) ** 2)) for o in out)) == pytest.approx(0.5, rel=1e-6)
    np.testing.assert_allclose(out[0] / out[0][0, 0], 1.0, rtol=1e-6)  # direction kept
    short = [np.array([0.1, -0.2], np.float32)]
    np.testing.assert_allclose(dp.privatize(short, np.random.default_rng(0))[0], short[0], atol=1e-6)


def test_noise_has_the_calibrated_spread_and_no_bias():
    dp = LocalDP(clip=0.5, noise_multiplier=1.3)
    out = dp.privatize([np.zeros(200_000, np.float32)], np.random.default_rng(1))[0]
    assert np.std(out) == pytest.approx(1.3 * 0.5, rel=0.01)
    assert abs(np.mean(out)) < 4 * 0.65 / math.sqrt(200_000)
    again = dp.privatize([np.zeros(200_000, np.float32)], np.random.default_rng(2))[0]
    assert abs(np.corrcoef(out, again)[0, 1]) < 0.01  # fresh noise every round


@pytest.mark.parametrize("z, rounds, delta", [(1.0, 1, 1e-5), (2.0, 10, 1e-6), (4.0, 50, 1e-6), (8.0, 20, 1e-5)])
def test_epsilon_matches_dp_accounting_for_the_same_mechanism(z, rounds, delta):
    ours = gaussian_epsilon(z, rounds, delta)  # sensitivity 2C, noise zC: GaussianDpEvent(z / 2)
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z / 2), rounds)
    pld_acc = pld.PLDAccountant(value_discretization_interval=1e-4)
    pld_acc.compose(event)
    rdp_acc = rdp.RdpAccountant()
    rdp_acc.compose(event)
    assert ours == pytest.approx(pld_acc.get_epsilon(delta), rel=0.01)  # the exact value PLD approximates
    assert ours <= rdp_acc.get_epsilon(delta) + 1e-9  # RDP is an upper bound


def test_gdp_closed_form_and_ledger_composition():
    # mu = 1, epsilon = 0: delta = 2 Phi(1/2) - 1 = 0.3829; at that delta epsilon is 0
    assert gdp_epsilon(1.0, 0.3829249) == pytest.approx(0.0, abs=1e-4)
    ledger = PrivacyLedger(1e-6)
    for r, z in enumerate([2.0, 4.0, 4.0], 1):
        ledger.record(r, LocalDP(noise_multiplier=z))
    assert ledger.mu == pytest.approx(math.sqrt(1 + 0.25 + 0.25))
    assert ledger.epsilon == pytest.approx(gdp_epsilon(math.sqrt(1.5), 1e-6))
    assert ledger.summary()["rounds"] == 3
    assert ledger.epsilon_if(LocalDP(noise_multiplier=2.0)) > ledger.epsilon


def test_a_plan_can_add_noise_but_never_remove_it():
    own = LocalDP(clip=1.0, noise_multiplier=2.0, epsilon_budget=5.0)
    asked = LocalDP.from_config({"clip": 0.5, "noise_multiplier": 0.5})
    got = own.stronger(asked)
    assert (got.clip, got.noise_multiplier, got.epsilon_budget) == (0.5, 2.0, 5.0)
    with pytest.raises(ValueError, match="not understood"):
        LocalDP.from_config({"sigma": 1})
    with pytest.raises(ValueError):
        LocalDP(noise_multiplier=0)


@pytest.mark.integration
def test_devices_send_noised_deltas_and_report_their_epsilon_over_mosquitto(mosquitto, tmp_path):
    clip, z, rounds = 0.05, 0.5, 2
    local = {"local_dp": {"clip": clip, "noise_multiplier": z, "delta": 1e-6}}  # the round-plan knob
    url = broker_url(mosquitto)
    devices = [DeviceClient(name, dev_id, "ldp", url, FixedUpdater(k), noise_seed=k)
               for k, (name, dev_id) in enumerate(REGISTRY.items())]
    cfg = AggregatorConfig(fleet="ldp", devices=dict(REGISTRY), rounds=rounds, local=local,
                           policy=RoundPolicy(deadline_s=60, max_norm_ratio=None))
    after_round: list = []
    agg = Aggregator(cfg, initial_weights(), url, tmp_path,
                     on_round=lambda row: after_round.append([w.copy() for w in agg.weights]))
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=agg.run()), daemon=True)
    for d in devices:
        d.start()
    thread.start()
    thread.join(90)
    for d in devices:
        d.stop()
    assert not thread.is_alive() and "result" in box, "aggregator did not finish"
    # each device's own ledger: two releases at z, the exact epsilon; its status told the aggregator
    want = gaussian_epsilon(z, rounds, 1e-6)
    for d in devices:
        assert d.privacy.summary()["rounds"] == rounds and d.privacy.epsilon == pytest.approx(want)
    reported = [s["privacy"] for s in agg.status.values() if s.get("privacy", {}).get("rounds")]
    assert reported and all(p["epsilon"] == pytest.approx(gaussian_epsilon(z, p["rounds"], 1e-6), rel=1e-5)
                            for p in reported)
    # what reached the aggregator was clipped and noised: round 1's model minus the clipped FedAvg step is
    # noise with spread z*C*sqrt(sum p_k^2) per coordinate (sample weights 10:20:30), and no train loss
    history = box["result"].history
    assert history[0]["participants"] == 3 and history[0]["loss"] is None
    w0, p = initial_weights(), (1 / 6, 2 / 6, 3 / 6)
    clipped = [_clip(delta_for(k, w0), clip) for k in range(3)]
    residual = np.concatenate([(after_round[0][i] - w0[i] - sum(p[k] * clipped[k][i] for k in range(3))).ravel()
                               for i in range(len(w0))])
    assert np.std(residual) == pytest.approx(z * clip * math.sqrt(sum(q * q for q in p)), rel=0.1)
    assert abs(np.mean(residual)) < 0.005


def _clip(delta, c):
    n = math.sqrt(sum(float(np.sum(d.astype(np.float64) ** 2)) for d in delta))
    return [d * min(1.0, c / n) for d in delta]
