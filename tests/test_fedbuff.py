"""FedBuff through the one round engine: staleness weighting and buffer arithmetic on hand-made updates (the
expected weights computed here, not by the strategy), staleness limits, the DP ledger per buffer, a
checkpoint taken mid-buffer, the virtual-clock simulation, and one asynchronous run over a real Mosquitto."""
import math
import threading

import numpy as np
import pytest

from broker.fed_messages import LocalUpdate, UpdateEncoding, encode_update
from broker.launcher import broker_url
from edge_runtime.fed_client import DeviceClient
from tests.federation_helpers import delta_for, initial_weights, run_to_end, wait_until
from training.federated.aggregator import Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.fedbuff import staleness_weight
from training.federated.in_process import run_in_process
from training.federated.registry import make_fleet_strategy, make_strategy
from training.federated.round_engine import Rejected, RoundEngine
from training.federated.strategies import ClientUpdate

W0 = [np.array([1.0, 2.0], np.float32), np.array([[0.5]], np.float32)]


def _update(device: str, values: tuple[float, float, float], n: int) -> ClientUpdate:
    return ClientUpdate(device, [np.array(values[:2], np.float32), np.array([[values[2]]], np.float32)], n)


def _engine(rounds: int = 5, **args) -> RoundEngine:
    args = {"buffer_size": 2, "server_lr": 0.5, "staleness_power": 0.5, **args}  # the paper's 1/√(1+τ)
    strategy = make_fleet_strategy("fedbuff", args, 4)
    return RoundEngine(strategy, ["a", "b", "c", "d"], RoundPolicy(max_norm_ratio=None), rounds,
                       [w.copy() for w in W0], clock=lambda: 0.0)


def test_staleness_weight_is_one_over_sqrt_one_plus_staleness():
    assert staleness_weight(0, 0.5) == 1.0
    assert staleness_weight(1, 0.5) == pytest.approx(1 / math.sqrt(2))
    assert staleness_weight(3, 0.5) == pytest.approx(0.5)
    assert staleness_weight(3, 1.0) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        staleness_weight(-1, 0.5)


def test_a_buffer_of_k_closes_the_version_and_stale_updates_are_down_weighted():
    engine = _engine()
    assert engine.open_round() and engine.selected == ["a", "b", "c", "d"]
    engine.accept("a", 1, _update("a", (1.0, 0.0, 2.0), 10))
    assert engine.close_due() is None  # 1 of 2
    engine.accept("b", 1, _update("b", (3.0, 4.0, 0.0), 30))
    assert engine.close_due() == "buffer_full"
    engine.close_round()
    # version 2: example-weighted mean (10·a + 30·b) / 40, times the server learning rate 0.5
    w1 = [np.array([1.0 + 0.5 * 2.5, 2.0 + 0.5 * 3.0]), np.array([[0.5 + 0.5 * 0.5]])]
    for got, want in zip(engine.weights, w1):
        np.testing.assert_allclose(got, want, rtol=1e-6)

    # c and d still train on version 1: only a and b are free for version 2
    assert engine.open_round() and engine.selected == ["a", "b"] and engine.in_flight == {"c": 1, "d": 1, "a": 2,
                                                                                          "b": 2}
    stale = engine.accept("c", 1, _update("c", (2.0, 2.0, 2.0), 20))
    assert stale.meta["staleness"] == 1
    engine.accept("a", 2, _update("a", (0.0, -4.0, 0.0), 20))
    assert engine.close_due() == "buffer_full"
    row = engine.close_round()
    s = 1 / math.sqrt(2)  # c is one version old
    step = [(20 * s * 2.0 + 20 * 0.0) / 40, (20 * s * 2.0 + 20 * -4.0) / 40, (20 * s * 2.0 + 0.0) / 40]
    w2 = [w1[0] + 0.5 * np.array(step[:2]), w1[1] + 0.5 * np.array([[step[2]]])]
    for got, want in zip(engine.weights, w2):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert row["late_accepted"] == 1 and row["buffer"]["staleness_max"] == 1 and row["closed_by"] == "buffer_full"
    assert row["fairness"]["min_count"] == 1 and row["fairness"]["max_count"] == 2


def test_an_update_older_than_the_staleness_limit_is_rejected_and_its_device_freed():
    engine = _engine(max_staleness=1)
    engine.open_round()
    for version in (1, 2):  # a and b fill two buffers while c and d stay busy on version 1
        engine.accept("a", version, _update("a", (1.0, 1.0, 1.0), 10))
        engine.accept("b", version, _update("b", (1.0, 1.0, 1.0), 10))
        engine.close_round()
        engine.open_round()
    assert engine.round == 3 and engine.in_flight["c"] == 3 and "c" in engine.selected  # freed: version 1 expired
    with pytest.raises(Rejected) as exc:
        engine.accept("d", 1, _update("d", (1.0, 1.0, 1.0), 10))
    assert exc.value.reason == "stale"
    with pytest.raises(Rejected) as exc:  # a device never asked to train on version 2
        engine.accept("c", 2, _update("c", (1.0, 1.0, 1.0), 10))
    assert exc.value.reason == "not_selected"
    with pytest.raises(Rejected) as exc:
        engine.accept("a", 4, _update("a", (1.0, 1.0, 1.0), 10))
    assert exc.value.reason == "future_round"


def test_dp_fedavg_inside_fedbuff_charges_each_buffer_with_the_buffer_size_as_denominator():
    args = {"inner": "dp_fedavg", "clip": 1.0, "noise_multiplier": 0.0, "buffer_size": 2, "server_lr": 1.0}
    engine = RoundEngine(make_fleet_strategy("fedbuff", args, 4), ["a", "b", "c", "d"], RoundPolicy(), 3,
                         [w.copy() for w in W0], clock=lambda: 0.0)
    engine.open_round()
    engine.accept("a", 1, _update("a", (3.0, 4.0, 0.0), 10))  # norm 5: clipped to 1
    row = engine.close_round()  # closed at a deadline with one update: the denominator stays K = 2
    np.testing.assert_allclose(engine.weights[0], [1.0 + 0.6 / 2, 2.0 + 0.8 / 2], rtol=1e-6)
    assert row["privacy"]["denominator"] == 2 and row["privacy"]["selected"] == 2


def test_server_momentum_carries_the_previous_buffer_into_the_next_version_and_survives_a_checkpoint():
    engine = _engine(server_momentum=0.5)  # server lr 0.5, K = 2
    engine.open_round()
    engine.accept("a", 1, _update("a", (1.0, 0.0, 2.0), 10))
    engine.accept("b", 1, _update("b", (3.0, 4.0, 0.0), 30))
    engine.close_round()
    v1 = np.array([2.5, 3.0, 0.5])  # (10·a + 30·b) / 40; the first velocity is the change itself
    engine.open_round()
    saved = engine.strategy.state()  # the velocity is part of the checkpointed strategy state
    np.testing.assert_allclose(np.concatenate([w.ravel() for w in saved["velocity"]]), v1, rtol=1e-6)
    engine.strategy = make_fleet_strategy("fedbuff", {"buffer_size": 2, "server_lr": 0.5, "server_momentum": 0.5,
                                                    "staleness_power": 0.5}, 4)
    engine.strategy.load_state(saved)  # as after a restart
    engine.accept("c", 1, _update("c", (2.0, 2.0, 2.0), 20))  # one version late: s(1) = 1/√2
    engine.accept("a", 2, _update("a", (0.0, -4.0, 0.0), 20))
    engine.close_round()
    s = 1 / math.sqrt(2)
    change = np.array([(20 * s * 2.0) / 40, (20 * s * 2.0 - 20 * 4.0) / 40, (20 * s * 2.0) / 40])
    v2 = 0.5 * v1 + change
    want = np.array([1.0, 2.0, 0.5]) + 0.5 * v1 + 0.5 * v2
    np.testing.assert_allclose(np.concatenate([w.ravel() for w in engine.weights]), want, rtol=1e-6)


def test_the_defaults_of_strategy_fedbuff_are_its_frozen_config():
    from dataclasses import FrozenInstanceError

    from training.federated.fedbuff import DEFAULTS, FedBuffConfig

    strategy = make_strategy("fedbuff")
    assert strategy.config == DEFAULTS == FedBuffConfig()
    assert strategy.buffering().buffer_size == DEFAULTS.buffer_size
    assert strategy.buffering().max_staleness == DEFAULTS.max_staleness
    assert staleness_weight(7, DEFAULTS.staleness_power) == 1.0  # the chosen default: a late update counts fully
    with pytest.raises(FrozenInstanceError):
        DEFAULTS.buffer_size = 3  # type: ignore[misc]


def test_fedbuff_refuses_bad_settings():
    for bad in ({"buffer_size": 0}, {"server_lr": 0}, {"inner": "fedbuff"}, {"max_staleness": -1},
                {"server_momentum": 1.0}, {"server_momentum": -0.1}, {"staleness_power": -1}):
        with pytest.raises(ValueError):
            make_strategy("fedbuff", **bad)


def _deliver(service: Aggregator, device: str, round_: int, delta: list[np.ndarray], n: int,
             loss: float | None = None) -> None:
    """``device``'s update through the aggregator's own receive path (decode, screen, log) and its durable point."""
    data = encode_update(service.cfg.fleet, round_, service.cfg.devices[device], LocalUpdate(delta, n, 1, None, loss),
                         UpdateEncoding.parse("float32"))
    service.accept(*service.screen.decode(device, data), data)
    service.journal.sync()


def test_a_checkpoint_taken_mid_buffer_resumes_to_the_same_weights(tmp_path):
    """The aggregator's persistence path alone (no broker): one update of a buffer of two accepted and logged,
    the service restarted (checkpoint + update-log replay), the second accepted: the same version as without
    the restart."""
    cfg = AggregatorConfig("buffered", {"a": 1, "b": 2, "c": 3}, rounds=3, strategy="fedbuff",
                           strategy_args={"buffer_size": 2, "server_lr": 0.5})
    first = Aggregator(cfg, initial_weights(), "mqtt://127.0.0.1:1", tmp_path / "run")
    first.engine.open_round()
    first._open_log()
    first.journal.save()
    _deliver(first, "c", 1, delta_for(2, initial_weights()), 30, 0.4)

    again = Aggregator(cfg, initial_weights(), "mqtt://127.0.0.1:1", tmp_path / "run")
    assert again.restore() and sorted(again.accepted) == ["c"] and again.engine.in_flight == {"a": 1, "b": 1}
    _deliver(again, "a", 1, delta_for(0, initial_weights()), 10)
    assert again.engine.close_due() == "buffer_full"
    again.engine.close_round()
    w0 = initial_weights()
    want = [w + 0.5 * (30 * c + 10 * a) / 40 for w, a, c in zip(w0, delta_for(0, w0), delta_for(2, w0))]
    for got, w in zip(again.weights, want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    with pytest.raises(Rejected):  # c's version-1 update was accepted before the restart: a duplicate now
        again.engine.accept("c", 1, ClientUpdate("c", delta_for(2, w0), 30))


class _Fixed:
    def __init__(self, value: float) -> None:
        self.value = value

    def fit(self, model):
        return LocalUpdate([np.full_like(w, self.value) for w in model.weights], num_examples=10, local_steps=1)


def test_in_process_a_slow_device_holds_a_synchronous_round_to_its_deadline_but_not_a_buffer():
    devices = {"fast1": _Fixed(1.0), "fast2": _Fixed(1.0), "slow": _Fixed(1.0)}
    policy = RoundPolicy(deadline_s=60.0, quorum=0.6, max_norm_ratio=None)
    sync = RoundEngine(make_strategy("fedavg"), list(devices), policy, 2, [w.copy() for w in W0])
    run_in_process(sync, devices, delays=lambda name, round_: 100.0 if name == "slow" else 10.0)
    # each synchronous round waits until its deadline (the slow device never makes it) with a quorum of 2
    assert [r["sim_seconds"] for r in sync.history] == [60.0, 60.0]
    assert [r["closed_by"] for r in sync.history] == ["deadline", "deadline"]
    assert sync.rejected["late"] == 1  # the slow update of round 1 arrived in round 2 and was dropped

    fedbuff = RoundEngine(make_strategy("fedbuff", buffer_size=2, staleness_power=0.5), list(devices), policy, 4,
                          [w.copy() for w in W0])
    run_in_process(fedbuff, devices, delays=lambda name, round_: 25.0 if name == "slow" else 10.0)
    # a version every 10 s: slow's version-1 update lands in version 3 (staleness 2), next to fast1's; fast2's
    # version-3 update then lands in version 4 (staleness 1), where slow is asked again
    assert [r["sim_time"] for r in fedbuff.history] == [10.0, 20.0, 30.0, 40.0]
    assert [r["buffer"]["staleness_max"] for r in fedbuff.history] == [0, 0, 2, 1]
    assert [r["selected"] for r in fedbuff.history] == [3, 2, 2, 2]


class _Gated:
    """Device k's deterministic delta; call i waits for ``gates[i]`` when given."""

    def __init__(self, k: int, gates: list) -> None:
        self.k, self.gates, self.calls = k, gates, 0

    def fit(self, model):
        gate = self.gates[self.calls] if self.calls < len(self.gates) else None
        self.calls += 1
        if gate is not None:
            gate.wait(timeout=60)
        return LocalUpdate(delta_for(self.k, model.weights), num_examples=10 * (self.k + 1), local_steps=1)


@pytest.mark.integration
def test_fedbuff_over_mosquitto_folds_a_stale_update_into_the_next_version(mosquitto, tmp_path):
    """a and b deliver version 1 at once; c (slow) trains on version 1 and lands in version 2 with staleness 1,
    together with the first of a/b's version-2 updates (identical deltas, so the result does not depend on
    which of them arrives first)."""
    url = broker_url(mosquitto)
    registry = {"a": 21, "b": 22, "c": 23}
    second, slow = threading.Event(), threading.Event()
    updaters = {"a": _Gated(0, [None, second]), "b": _Gated(0, [None, second]), "c": _Gated(2, [slow])}
    cfg = AggregatorConfig(fleet="fedbuff-mqtt", devices=registry, rounds=2, strategy="fedbuff",
                           strategy_args={"buffer_size": 2, "server_lr": 0.5, "staleness_power": 0.5},
                           policy=RoundPolicy(deadline_s=60))
    agg = Aggregator(cfg, initial_weights(), url, tmp_path)
    devices = [DeviceClient(name, dev_id, "fedbuff-mqtt", url, updaters[name]) for name, dev_id in registry.items()]

    def release() -> None:
        wait_until(lambda: agg.engine.round == 2, what="version 2")
        slow.set()
        wait_until(lambda: len(agg.engine.accepted) == 1, what="c's stale update")
        second.set()

    threading.Thread(target=release, daemon=True).start()
    result = run_to_end(agg, devices)
    assert [r["participants"] for r in result.history] == [2, 2]
    assert [r["selected"] for r in result.history] == [3, 2]  # c was still busy when version 2 opened
    assert result.history[1]["buffer"]["staleness_max"] == 1 and result.history[1]["late_accepted"] == 1
    w0 = initial_weights()
    w1 = [w + 0.5 * d for w, d in zip(w0, delta_for(0, w0))]
    s = 1 / math.sqrt(2)
    w2 = [w + 0.5 * (30 * s * c + 10 * a) / 40 for w, c, a in zip(w1, delta_for(2, w0), delta_for(0, w1))]
    for got, want in zip(result.final_weights, w2):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_buffer_gets_the_outlier_screen_and_the_privacy_budget_stops_the_versions():
    """The same screen and budget stop as synchronous rounds: an exploding device is dropped from each buffer
    of three, and DP-FedAvg inside FedBuff stops after the two buffers its ε budget pays for."""
    from training.federated.privacy import epsilon

    devices = {"a": _Fixed(0.1), "b": _Fixed(0.2), "c": _Fixed(0.1), "x": _Fixed(1e6)}
    args = {"inner": "dp_fedavg", "buffer_size": 4, "clip": 1.0, "noise_multiplier": 1.0, "seed": 3,
            "epsilon_budget": epsilon(1.0, 1.0, 2, 1e-6) * 1.000001}
    engine = RoundEngine(make_fleet_strategy("fedbuff", args, 4, "seeded"), list(devices), RoundPolicy(), 10,
                         [w.copy() for w in W0])
    run_in_process(engine, devices)
    assert len(engine.history) == 2 and engine.budget_stopped
    assert engine.rejected["outlier_norm"] == 2
    assert [r["privacy"]["denominator"] for r in engine.history] == [4, 4]
    assert engine.history[-1]["privacy"]["epsilon_rdp"] <= args["epsilon_budget"]
