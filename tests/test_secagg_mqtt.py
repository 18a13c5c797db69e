"""Secure aggregation over a real Mosquitto: the aggregator service and device clients run the four steps
as signed SECAGG messages; the sum is right, dropouts are survived, forged and replayed steps are refused."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.fed_messages import GlobalModel, LocalUpdate, fleet_id
from broker.launcher import broker_url
from broker.mqtt_link import MqttLink
from broker.secagg_messages import (
    KeyAdvert,
    Step,
    UnmaskReply,
    decode_secagg,
    encode_secagg,
)
from broker.signing import sign_message, verify_message
from broker.topics import FleetTopics
from edge_runtime.fed_client import DeviceClient
from tests.federation_helpers import SHAPES, initial_weights, wait_until
from training.federated.accountant import gaussian_rounds_epsilon
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.secagg_round import SecAggAggregator, SecAggSettings

pytestmark = pytest.mark.integration


def fixed_delta(k: int) -> list[np.ndarray]:
    rng = np.random.default_rng(100 + k)
    return [rng.normal(0, 0.05, size=s).astype(np.float32) for s in SHAPES]


class Updater:
    def __init__(self, k: int, gate: threading.Event | None = None, gate_round: int = 0) -> None:
        self.k, self.gate, self.gate_round = k, gate, gate_round

    def fit(self, model: GlobalModel) -> LocalUpdate:
        if self.gate is not None and model.plan.round == self.gate_round:
            self.gate.wait(timeout=60)
        return LocalUpdate(fixed_delta(self.k), num_examples=10, local_steps=1)


class SilentAfterInput(DeviceClient):
    """A device that drops out after its masked input: it never answers the unmask request."""

    def _send_secagg(self, outgoing: list) -> None:
        super()._send_secagg([o for o in outgoing if not isinstance(o[2], UnmaskReply)])


class SecAggFederation:
    def __init__(self, broker, run_dir, fleet: str, n: int, rounds: int = 1, settings: SecAggSettings | None = None,
                 silent: tuple[int, ...] = (), gate: threading.Event | None = None, gate_round: int = 0) -> None:
        self.url, self.fleet = broker_url(broker), fleet
        self.registry = {f"d{k:02d}": k + 1 for k in range(n)}
        self.keys = {name: Ed25519PrivateKey.generate() for name in [*self.registry, "aggregator"]}
        agg_pub = self.keys["aggregator"].public_key()
        self.devices = [(SilentAfterInput if k in silent else DeviceClient)(
            name, dev_id, fleet, self.url, Updater(k, gate, gate_round), signing_key=self.keys[name],
            aggregator_key=agg_pub, noise_seed=k) for k, (name, dev_id) in enumerate(self.registry.items())]
        cfg = AggregatorConfig(fleet=fleet, devices=self.registry, rounds=rounds, policy=RoundPolicy(deadline_s=30),
                               device_keys={d: self.keys[d].public_key() for d in self.registry})
        self.aggregator = SecAggAggregator(cfg, initial_weights(), self.url, run_dir, secagg=settings,
                                           signing_key=self.keys["aggregator"])
        self.result, self._thread = None, threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.result = self.aggregator.run()

    def start(self) -> SecAggFederation:
        for d in self.devices:
            d.start()
        self._thread.start()
        return self

    def finish(self, timeout_s: float = 120):
        self._thread.join(timeout_s)
        for d in self.devices:
            d.stop()
        assert not self._thread.is_alive() and self.result is not None, "aggregator did not finish"
        return self.result


def _plain_mean(ks) -> list[np.ndarray]:
    return [np.mean([fixed_delta(k)[i].astype(np.float64) for k in ks], axis=0) for i in range(len(SHAPES))]


def _assert_close(got, want, atol):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=atol, rtol=0)


def test_the_secure_sum_equals_the_plain_sum(mosquitto, tmp_path):
    fed = SecAggFederation(mosquitto, tmp_path, "sa-sum", n=6).start()
    result = fed.finish()
    row = result.history[0]
    assert row["participants"] == 6 and row["secagg"]["inputs"] == 6 and row["secagg"]["failed"] is None
    scale = fed.aggregator._state.plan.scale
    want = [w + m for w, m in zip(initial_weights(), _plain_mean(range(6)))]
    _assert_close(result.final_weights, want, atol=6 / scale + 1e-6)  # fixed-point rounding only
    assert result.rejected == {}
    assert row["secagg"]["bytes_up"] > 6 * 4 * sum(math.prod(s) for s in SHAPES)  # one u32 per parameter + steps


def test_a_round_completes_with_30_percent_dropping_after_their_masked_input(mosquitto, tmp_path):
    fed = SecAggFederation(mosquitto, tmp_path, "sa-drop", n=10, silent=(2, 5, 8)).start()
    result = fed.finish()
    sa = result.history[0]["secagg"]
    assert (sa["inputs"], sa["unmask_replies"], sa["threshold"], sa["failed"]) == (10, 7, 7, None)
    want = [w + m for w, m in zip(initial_weights(), _plain_mean(range(10)))]  # their inputs still count
    _assert_close(result.final_weights, want, atol=10 / fed.aggregator._state.plan.scale + 1e-6)


def test_forged_and_replayed_steps_are_rejected_and_counted(mosquitto, tmp_path):
    gate = threading.Event()
    fed = SecAggFederation(mosquitto, tmp_path, "sa-replay", n=4, rounds=2, gate=gate, gate_round=2)
    seen: list[tuple[str, bytes]] = []
    spy = MqttLink(fed.url, "sa-replay-spy", [FleetTopics("sa-replay").all_updates()],
                   lambda m: seen.append((m.topic, m.payload)))
    spy.start()
    fed.start()
    agg = fed.aggregator
    wait_until(lambda: agg.round == 2 and agg._state.step == Step.MASKED_INPUT, what="round 2 waiting for inputs")

    def captured(round_: int, device: str, step: Step) -> bytes:
        for topic, payload in seen:
            if (topic == FleetTopics("sa-replay").update(round_, device)
                    and decode_secagg(verify_message(payload, fed.keys[device].public_key()))[1].step == step):
                return payload
        raise AssertionError(f"no {step.name} of {device} in round {round_} seen")

    topics, fid, session = FleetTopics("sa-replay"), fleet_id("sa-replay"), agg._state.plan.session
    mallory = Ed25519PrivateKey.generate()
    forged = sign_message(encode_secagg(fid, 2, session, KeyAdvert(1, bytes(32), bytes(32))), mallory)
    old_session = sign_message(encode_secagg(fid, 2, session ^ 1, KeyAdvert(3, bytes(32), bytes(32))),
                               fed.keys["d02"])
    injected = [(topics.update(2, "d00"), forged),  # d00's name, somebody else's key
                (topics.update(2, "d01"), captured(1, "d01", Step.MASKED_INPUT)),  # round 1 into round 2
                (topics.update(2, "d01"), captured(2, "d01", Step.ADVERT)),  # the same step twice
                (topics.update(2, "d02"), old_session)]  # right round and key, another session
    for topic, payload in injected:
        spy.publish(topic, payload)
    want = {"bad_signature": 1, "round_mismatch": 1, "duplicate": 1, "stale_session": 1}
    wait_until(lambda: all(agg.rejected.get(k, 0) >= v for k, v in want.items()), what=f"rejections {want}")
    gate.set()
    result = fed.finish()
    spy.stop()
    assert {k: result.rejected[k] for k in want} == want
    assert result.history[1]["secagg"]["inputs"] == 4 and result.history[1]["secagg"]["failed"] is None
    assert sum(result.history[1]["rejected"].values()) == 4  # counted in the round's row too
    want_weights = [w + 2 * m for w, m in zip(initial_weights(), _plain_mean(range(4)))]  # same deltas twice
    _assert_close(result.final_weights, want_weights, atol=8 / agg._state.plan.scale + 1e-6)


def test_distributed_noise_gives_the_aggregate_its_dp_noise_and_is_accounted(mosquitto, tmp_path):
    z, clip = 1.0, 0.5
    fed = SecAggFederation(mosquitto, tmp_path, "sa-dp", n=6, settings=SecAggSettings(clip=clip, noise_multiplier=z))
    fed.start()
    result = fed.finish()
    row = result.history[0]
    t, n = row["secagg"]["threshold"], row["secagg"]["inputs"]
    assert (t, n) == (4, 6)
    clipped = []
    for k in range(6):
        d = fixed_delta(k)
        norm = math.sqrt(sum(float(np.sum(x.astype(np.float64) ** 2)) for x in d))
        clipped.append([x * min(1.0, clip / norm) for x in d])
    mean_clipped = [np.mean([c[i] for c in clipped], axis=0) for i in range(len(SHAPES))]
    residual = np.concatenate([(f - w - m).ravel() for f, w, m in
                               zip(result.final_weights, initial_weights(), mean_clipped)])
    # sum noise: 6 devices x N(0, (zC)^2 / t) = N(0, (zC)^2 * 6/4); the mean divides by 6
    assert np.std(residual) == pytest.approx(z * clip * math.sqrt(n / t) / n, rel=0.1)
    z_eff = z * math.sqrt(n / t)
    assert row["privacy"]["z_eff"] == pytest.approx(z_eff)
    assert row["privacy"]["epsilon_rdp"] == pytest.approx(gaussian_rounds_epsilon([z_eff], 1e-6))
