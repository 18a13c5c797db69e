"""An aggregator that restarts in the middle of a secure-aggregation round loses nothing: it resumes the round
under a new session and the devices rejoin with the update they already prepared, never training or drawing
noise twice for it (the carry-over rules are unit-tested on ``SecAggParticipant``, the restart over Mosquitto)."""
from __future__ import annotations

import math
import threading
from dataclasses import replace

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.fed_messages import GlobalModel, LocalUpdate, fleet_id
from broker.launcher import broker_url
from broker.secagg_messages import (AdvertList, SecAggMessage, SecAggPlan, SharesFor, Step, UnmaskRequest,
                                    decode_secagg, encode_secagg)
from edge_runtime.fed_client import DeviceClient
from edge_runtime.secagg_client import SecAggParticipant, prepare_input
from edge_runtime.secure_aggregation import FixedPoint, SecAggServer
from tests.federation_helpers import initial_weights, wait_until
from tests.test_secagg_mqtt import Updater, _assert_close, _plain_mean
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.secagg_round import SecAggAggregator

ROUND = 1
FID = fleet_id("sa-unit")


# ---------------------------------------------------------------------------------------------- in process
def _received(plan: SecAggPlan, payload) -> SecAggMessage:
    """An aggregator message of ``plan``'s session as a device decodes it from the wire."""
    return decode_secagg(encode_secagg(FID, ROUND, plan.session, payload))[1]


def _payloads(outgoing: list, plan: SecAggPlan) -> list:
    assert all(r == ROUND and s == plan.session for r, s, _ in outgoing), "a step sent outside its session"
    return [p for _, _, p in outgoing]


def run_session(parts: dict[int, SecAggParticipant], plan: SecAggPlan, size: int,
                late_updates: dict[int, np.ndarray] | None = None) -> tuple[set[int], np.ndarray | None]:
    """One session of round 1 among ``parts``, routed as ``SecAggAggregator`` routes it. ``late_updates``:
    trainings that finish after the shares are in. Returns who sent a masked input, and the unmasked sum
    (None below the threshold)."""
    adverts = {i: _payloads([p.begin(ROUND, plan)], plan)[0] for i, p in parts.items()}
    advert_list = AdvertList(tuple(adverts[i] for i in sorted(adverts)))
    shares = {i: _payloads(p.on_message(ROUND, _received(plan, advert_list)), plan)[0] for i, p in parts.items()}
    inputs = {}
    for j, p in parts.items():
        routed = SharesFor(j, {i: m.to[j] for i, m in shares.items() if i != j})
        inputs.update({m.device: m for m in _payloads(p.on_message(ROUND, _received(plan, routed)), plan)})
    for j, flat in (late_updates or {}).items():
        inputs.update({m.device: m for m in _payloads(parts[j].set_update(ROUND, flat), plan)})
    if len(inputs) < plan.threshold:
        return set(inputs), None
    request = UnmaskRequest(tuple(sorted(inputs)), tuple(sorted(set(shares) - set(inputs))))
    replies = [r for p in parts.values() for r in _payloads(p.on_message(ROUND, _received(plan, request)), plan)]
    server = SecAggServer(plan.threshold, size, FixedPoint(plan.bound, plan.scale, plan.devices), adverts)
    return set(inputs), server.sum(sorted(shares), list(inputs.values()), replies)


def _flat(k: int, size: int = 1000) -> np.ndarray:
    return np.random.default_rng(50 + k).normal(0.0, 0.05, size)


def _participants(n: int) -> dict[int, SecAggParticipant]:
    return {k + 1: SecAggParticipant(k + 1, np.random.default_rng(k)) for k in range(n)}


def _replayed(k: int, flat: np.ndarray, plan: SecAggPlan) -> np.ndarray:
    """Device k's first prepared update, drawn again from a copy of its noise generator."""
    return prepare_input(flat, plan, np.random.default_rng(k))


@pytest.mark.parametrize("noise_ratio", [1.0, 0.5], ids=["same-noise", "less-noise"])
def test_a_new_session_reuses_the_prepared_update_without_drawing_noise_again(noise_ratio):
    first = SecAggPlan(1, threshold=2, devices=2, bound=4.0, scale=2.0**20, clip=10.0, noise_sd=0.1)
    rngs = [np.random.default_rng(k) for k in range(2)]
    parts = {k + 1: SecAggParticipant(k + 1, rng) for k, rng in enumerate(rngs)}
    for k, p in enumerate(parts.values()):
        p.begin(ROUND, first)
        assert p.set_update(ROUND, _flat(k)) == []  # the aggregator restarts before the shares are routed
    states = [rng.bit_generator.state for rng in rngs]

    second = replace(first, session=2, noise_sd=first.noise_sd * noise_ratio)
    sent, total = run_session(parts, second, 1000)
    assert sent == {1, 2}
    np.testing.assert_allclose(total, _replayed(0, _flat(0), first) + _replayed(1, _flat(1), first),
                               atol=2 / first.scale, rtol=0)
    assert [rng.bit_generator.state for rng in rngs] == states  # not one more draw
    assert all(p.declined == 0 for p in parts.values())


def test_more_noise_in_the_new_session_tops_the_same_update_up():
    size, old_sd, new_sd = 200_000, 1.0, 2.0
    first = SecAggPlan(1, threshold=2, devices=2, bound=16.0, scale=2.0**20, clip=1.0, noise_sd=old_sd)
    parts = _participants(2)
    for p in parts.values():
        p.begin(ROUND, first)
        p.set_update(ROUND, np.zeros(size))
    old = _replayed(0, np.zeros(size), first) + _replayed(1, np.zeros(size), first)

    _, total = run_session(parts, replace(first, session=2, noise_sd=new_sd), size)
    # each input now carries N(0, new²); what was added to the old one is N(0, new² - old²), not a fresh
    # N(0, new²) (that would make the difference N(0, new² + old²)). 200 000 draws: the std is within 0.2 %.
    assert np.std(total) == pytest.approx(math.sqrt(2) * new_sd, rel=0.02)
    assert np.std(total - old) == pytest.approx(math.sqrt(2 * (new_sd**2 - old_sd**2)), rel=0.02)


def test_a_new_clip_declines_the_prepared_update_and_a_training_still_running_takes_the_new_plan():
    first = SecAggPlan(1, threshold=2, devices=3, bound=4.0, scale=2.0**20, clip=1.0, noise_sd=0.01)
    parts = _participants(3)
    for p in parts.values():
        p.begin(ROUND, first)
    parts[1].set_update(ROUND, _flat(0))  # devices 2 and 3 are still training at the restart

    second = replace(first, session=2, clip=0.5)
    sent, total = run_session(parts, second, 1000, late_updates={2: _flat(1), 3: _flat(2)})
    assert sent == {2, 3}  # device 1 advertised and shared, but sent no input
    assert "clip" in parts[1].withheld(ROUND) and parts[1].declined == 1
    assert parts[2].withheld(ROUND) is None and parts[2].declined == 0
    want = _replayed(1, _flat(1), second) + _replayed(2, _flat(2), second)  # their only noise draw, clipped to 0.5
    np.testing.assert_allclose(total, want, atol=2 / first.scale, rtol=0)


def test_an_update_listed_in_an_unmask_request_never_enters_a_second_sum():
    first = SecAggPlan(1, threshold=2, devices=2, bound=4.0, scale=2.0**20)
    parts = _participants(2)
    sent, total = run_session(parts, first, 1000, late_updates={1: _flat(0), 2: _flat(1)})
    assert sent == {1, 2} and total is not None  # the sum may be known to the aggregator that restarts now

    sent, total = run_session(parts, replace(first, session=2), 1000)
    assert sent == set() and total is None
    assert all("unmask" in p.withheld(ROUND) and p.declined == 1 for p in parts.values())


# ---------------------------------------------------------------------------------------------- over MQTT
class _Crash(BaseException):
    """Ends the aggregator's thread the way SIGKILL ends its process: nothing saved, nothing closed."""


class CrashingAggregator(SecAggAggregator):
    """Dies as soon as ``crash_after_inputs`` masked inputs of its round are in."""

    crash_after_inputs = 0

    def _handle(self, message) -> None:
        super()._handle(message)
        if self._state is not None and len(self._state.inputs) >= self.crash_after_inputs:
            raise _Crash


class CountingUpdater(Updater):
    def __init__(self, k: int, gate: threading.Event | None) -> None:
        super().__init__(k, gate, gate_round=ROUND)
        self.calls = 0

    def fit(self, model: GlobalModel) -> LocalUpdate:
        self.calls += 1
        return super().fit(model)


def _in_thread(aggregator: SecAggAggregator) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = aggregator.run()
        except _Crash:
            outcome["crashed"] = True

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.integration
def test_a_restarted_aggregator_completes_the_secure_round_with_the_devices_rejoining(mosquitto, tmp_path):
    n, training = 5, (3, 4)  # devices 3 and 4 are still training when the aggregator dies
    url, fleet = broker_url(mosquitto), "sa-restart"
    registry = {f"d{k:02d}": k + 1 for k in range(n)}
    keys = {name: Ed25519PrivateKey.generate() for name in [*registry, "aggregator"]}
    gate = threading.Event()
    updaters = [CountingUpdater(k, gate if k in training else None) for k in range(n)]
    devices = [DeviceClient(name, dev_id, fleet, url, updaters[k], signing_key=keys[name],
                            aggregator_key=keys["aggregator"].public_key(), noise_seed=k)
               for k, (name, dev_id) in enumerate(registry.items())]
    cfg = AggregatorConfig(fleet=fleet, devices=registry, rounds=1, policy=RoundPolicy(deadline_s=30),
                           device_keys={d: keys[d].public_key() for d in registry})

    def aggregator(cls: type[SecAggAggregator]) -> SecAggAggregator:
        return cls(cfg, initial_weights(), url, tmp_path, signing_key=keys["aggregator"])

    first = aggregator(CrashingAggregator)
    first.crash_after_inputs = n - len(training)  # adverts and shares all in, the trained devices' inputs too
    second = aggregator(SecAggAggregator)
    try:
        for d in devices:
            d.start()
        thread, outcome = _in_thread(first)
        thread.join(timeout=60)
        assert outcome.get("crashed"), "the first aggregator did not reach its crash"
        first.link.stop()  # the broker keeps its persistent session for the next one
        thread, outcome = _in_thread(second)
        wait_until(lambda: second._state is not None and second._state.step == Step.MASKED_INPUT,
                   what="every device advertising and sharing again in the restarted round")
        gate.set()  # the two trainings end now and land in the new session
        thread.join(timeout=60)
    finally:
        gate.set()
        for d in devices:
            d.stop()
    result = outcome.get("result")
    assert result is not None, "the restarted aggregator did not finish"
    assert second._state.plan.session != first._state.plan.session
    row = result.history[0]
    assert (row["round"], row["participants"], row["secagg"]["inputs"], row["secagg"]["failed"]) == (1, 5, 5, None)
    want = [w + m for w, m in zip(initial_weights(), _plain_mean(range(n)))]
    _assert_close(result.final_weights, want, atol=n / second._state.plan.scale + 1e-6)  # fixed point only
    assert [u.calls for u in updaters] == [1] * n  # nobody trained twice
    assert all(d.secagg.declined == 0 and d.errors == 0 for d in devices)
    assert result.rejected == {}
