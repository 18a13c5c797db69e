"""Federated rounds through a real Mosquitto: aggregator service and device clients, end to end."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.fed_messages import LocalUpdate, UpdateEncoding, encode_update, fleet_id
from broker.signing import sign_message
from broker.launcher import EmbeddedBroker, MosquittoBroker, broker_url
from broker.topics import FleetTopics
from broker.wire import Encoding, Kind, encode_tensors
from edge_runtime.fed_client import DeviceClient
from tests.test_wire import _recrc
from tests.federation_helpers import (REGISTRY, FixedUpdater, delta_for, expected_fedavg, initial_weights,
                                      wait_until)
from training.federated import checkpoint
from training.federated.aggregator import CHECKPOINT_FILE, LOG_DIR, Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.update_log import scan

pytestmark = pytest.mark.integration


class Federation:
    """An aggregator thread and three device clients on one broker."""

    def __init__(self, broker, run_dir: Path, fleet: str, rounds: int, policy: RoundPolicy | None = None,
                 encoding: str = "float32", chunk_size: int | None = None, gates: dict | None = None,
                 strategy: str = "fedavg", strategy_args: dict | None = None, keys: dict | None = None) -> None:
        self.url = broker_url(broker)
        self.fleet = fleet
        gates = gates or {}
        self.updaters = {name: FixedUpdater(k, gates.get(name)) for k, name in enumerate(REGISTRY)}
        keys = keys or {}
        agg_key = keys.get("aggregator")
        self.devices = {name: DeviceClient(name, dev_id, fleet, self.url, self.updaters[name],
                                           signing_key=keys.get(name),
                                           aggregator_key=agg_key.public_key() if agg_key else None)
                        for name, dev_id in REGISTRY.items()}
        cfg = AggregatorConfig(fleet=fleet, devices=dict(REGISTRY), rounds=rounds, strategy=strategy,
                               strategy_args=strategy_args or {},
                               policy=policy or RoundPolicy(deadline_s=60), encoding=encoding, chunk_size=chunk_size,
                               device_keys={n: k.public_key() for n, k in keys.items() if n in REGISTRY} or None)
        self.aggregator = Aggregator(cfg, initial_weights(), self.url, run_dir, signing_key=agg_key)
        self.result = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.aggregator.run()
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def start(self) -> "Federation":
        for d in self.devices.values():
            d.start()
        self._thread.start()
        return self

    def finish(self, timeout_s: float = 90):
        self._thread.join(timeout_s)
        for d in self.devices.values():
            d.stop()
        assert not self._thread.is_alive(), "aggregator did not finish"
        if self.error:
            raise self.error
        return self.result


def _assert_weights(got, want, atol=1e-6):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=atol, rtol=0)


def test_three_devices_two_rounds_match_in_process_fedavg(mosquitto, tmp_path):
    fed = Federation(mosquitto, tmp_path, "match", rounds=2, chunk_size=512).start()
    result = fed.finish()
    _assert_weights(result.final_weights, expected_fedavg(2))
    assert [h["participants"] for h in result.history] == [3, 3]
    assert all(h["bytes_received"] > 0 and h["quorum_met"] for h in result.history)
    assert result.rejected == {}
    rows = json.loads((tmp_path / "rounds.json").read_text())
    assert [r["round"] for r in rows] == [1, 2]
    assert (tmp_path / "rounds.csv").read_text().count("\n") == 3


def test_int8_deltas_cost_a_quarter_of_the_bytes_and_land_close(mosquitto, tmp_path):
    f32 = Federation(mosquitto, tmp_path / "f32", "bytes32", rounds=1).start().finish()
    i8 = Federation(mosquitto, tmp_path / "i8", "bytes8", rounds=1, encoding="int8").start().finish()
    ratio = f32.history[0]["bytes_received"] / i8.history[0]["bytes_received"]
    assert ratio > 3.5  # not 4: headers and metadata
    _assert_weights(i8.final_weights, expected_fedavg(1), atol=0.02)


def test_deadline_closes_with_quorum_and_the_reconnecting_device_delivers_once(mosquitto, tmp_path):
    gate = threading.Event()
    policy = RoundPolicy(quorum=0.6, deadline_s=3, late="downweight:0.5")
    fed = Federation(mosquitto, tmp_path, "dropout", rounds=2, policy=policy, gates={"dev-c": gate}).start()
    late = fed.devices["dev-c"]
    wait_until(lambda: fed.updaters["dev-c"].calls == 1, what="dev-c to start round 1")
    late.link.stop()  # the device drops off the network mid-round ...
    gate.set()  # ... finishes training while offline: its update waits in the client
    wait_until(lambda: fed.aggregator.round == 2, what="round 1 to close at its deadline")
    assert fed.aggregator.history[0]["participants"] == 2 and fed.aggregator.history[0]["quorum_met"]
    late.link.start()  # back online: the pending round-1 update goes out (paho's queue + one re-send)
    result = fed.finish()
    assert result.history[1]["late_accepted"] == 1  # delivered, and counted once
    assert result.history[1]["participants"] == 3
    assert late.rounds_sent == [1, 2]


def test_malformed_payloads_are_rejected_counted_and_the_round_goes_on(mosquitto, tmp_path):
    gate = threading.Event()
    fed = Federation(mosquitto, tmp_path, "hostile", rounds=1, gates={"dev-c": gate}).start()
    topics = FleetTopics("hostile")
    fid = fleet_id("hostile")
    good = encode_update("hostile", 1, 13, LocalUpdate(delta_for(2, initial_weights()), 30, 3),
                         UpdateEncoding.parse("float32"))
    nan = bytearray(good)
    nan[-4:] = np.array([np.nan], "<f4").tobytes()  # last value NaN, CRC fixed below
    wrong_shape = encode_update("hostile", 1, 13, LocalUpdate([np.ones(3, np.float32)], 30, 3),
                                UpdateEncoding.parse("float32"))
    attacks = {
        "truncated": (topics.update(1, "dev-c"), good[: len(good) // 2]),
        "bad_magic": (topics.update(1, "dev-c"), b"XX" + good[2:]),
        "bad_version": (topics.update(1, "dev-c"), _recrc(good[:2] + b"\x09" + good[3:])),
        "bad_crc": (topics.update(1, "dev-c"), good[:-1] + bytes([good[-1] ^ 1])),
        "oversized": (topics.update(1, "dev-c"), _recrc(good[:20] + (2**31).to_bytes(4, "little") + good[24:])),
        "non_finite": (topics.update(1, "dev-c"), _recrc(bytes(nan))),
        "bad_shape": (topics.update(1, "dev-c"), wrong_shape),
        "unknown_device": (topics.update(1, "mallory"), good),
        "device_mismatch": (topics.update(1, "dev-a"), good),
        "future_round": (topics.update(7, "dev-c"),
                         encode_update("hostile", 7, 13, LocalUpdate(delta_for(2, initial_weights()), 30, 3),
                                       UpdateEncoding.parse("float32"))),
        "wrong_fleet": (topics.update(1, "dev-c"), encode_tensors(Kind.UPDATE, fid ^ 1, 1, 13, [np.ones(2)],
                                                                  Encoding.FLOAT32, {"n_delta": 1, "num_examples": 1,
                                                                                     "local_steps": 1})),
        "bad_topic": ("pw/hostile/update/x/dev-c", good),
    }
    wait_until(lambda: fed.aggregator.history == [] and fed.updaters["dev-c"].calls == 1, what="round 1")
    attacker = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="mallory")
    attacker.connect(mosquitto.host, mosquitto.port)
    attacker.loop_start()
    for topic, payload in attacks.values():
        attacker.publish(topic, bytes(payload), qos=1).wait_for_publish(timeout=10)
    wait_until(lambda: sum(fed.aggregator.rejected.values()) >= len(attacks), what="rejections")
    gate.set()  # the honest update of dev-c still gets in after all that
    result = fed.finish()
    attacker.loop_stop()
    attacker.disconnect()
    assert result.rejected == {reason: 1 for reason in attacks}
    assert result.history[0]["participants"] == 3
    _assert_weights(result.final_weights, expected_fedavg(1))


def test_broker_restart_mid_round_loses_no_accepted_update(tmp_path):
    broker = MosquittoBroker(state_dir=tmp_path / "broker")
    broker.start()
    try:
        gate = threading.Event()
        fed = Federation(broker, tmp_path / "run", "restart", rounds=2, gates={"dev-c": gate}).start()
        wait_until(lambda: len(fed.aggregator.accepted) == 2, what="two updates in round 1")
        broker.restart()
        gate.set()  # dev-c publishes while everyone is reconnecting
        result = fed.finish(timeout_s=120)
    finally:
        broker.close()
    assert [h["participants"] for h in result.history] == [3, 3]
    _assert_weights(result.final_weights, expected_fedavg(2))


def test_aggregator_killed_mid_round_resumes_from_its_checkpoint(mosquitto, tmp_path):
    np.savez(tmp_path / "init.npz", *initial_weights())
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "tools.cli", "aggregate", "--broker", broker_url(mosquitto), "--fleet", "phoenix",
           "--devices", ",".join(f"{n}:{i}" for n, i in REGISTRY.items()), "--init", str(tmp_path / "init.npz"),
           "--run-dir", str(run_dir), "--rounds", "2", "--quorum", "1", "--deadline", "120"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def accepted_in_round_1() -> int:
        path = run_dir / LOG_DIR / "round1.log"
        return len(list(scan(path))) if path.exists() else 0

    gate = threading.Event()
    updaters = {name: FixedUpdater(k, gate if name == "dev-c" else None) for k, name in enumerate(REGISTRY)}
    devices = [DeviceClient(name, i, "phoenix", broker_url(mosquitto), updaters[name]) for name, i in REGISTRY.items()]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for d in devices:
            d.start()
        wait_until(lambda: accepted_in_round_1() == 2, timeout_s=120, what="two logged updates in round 1")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        gate.set()
        out, _ = second.communicate(timeout=120)
    finally:
        first.kill()
        for d in devices:
            d.stop()
    assert second.returncode == 0, out
    assert "resuming round 1 with 2 accepted update(s)" in out
    manifest, arrays = checkpoint.load(run_dir / CHECKPOINT_FILE)
    assert manifest["round"] == 3 and [h["participants"] for h in manifest["history"]] == [3, 3]
    _assert_weights(arrays["weights"], expected_fedavg(2))
    assert updaters["dev-a"].calls == 2  # the restart re-announced round 1 without making anyone train twice


def test_the_embedded_broker_carries_a_federation_too(tmp_path):
    """The demo's fallback when Mosquitto is not installed."""
    broker = EmbeddedBroker()
    broker.start()
    try:
        result = Federation(broker, tmp_path, "embedded", rounds=2, chunk_size=512).start().finish()
    finally:
        broker.close()
    _assert_weights(result.final_weights, expected_fedavg(2))


def test_signed_fleet_accepts_only_updates_signed_by_their_device(mosquitto, tmp_path):
    keys = {name: Ed25519PrivateKey.generate() for name in [*REGISTRY, "aggregator"]}
    gate = threading.Event()
    fed = Federation(mosquitto, tmp_path, "signed", rounds=1, chunk_size=600, keys=keys, gates={"dev-c": gate}).start()
    wait_until(lambda: fed.updaters["dev-c"].calls == 1, what="round 1")
    topics = FleetTopics("signed")
    forged = encode_update("signed", 1, 13, LocalUpdate(delta_for(2, initial_weights()), 30, 3),
                           UpdateEncoding.parse("float32"))
    attacker = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="forger")
    attacker.connect(mosquitto.host, mosquitto.port)
    attacker.loop_start()
    attacker.publish(topics.update(1, "dev-c"), forged, qos=1).wait_for_publish(10)  # unsigned
    attacker.publish(topics.update(1, "dev-c"), sign_message(forged, Ed25519PrivateKey.generate()),
                     qos=1).wait_for_publish(10)  # signed, but not by dev-c
    wait_until(lambda: sum(fed.aggregator.rejected.values()) >= 2, what="both forgeries rejected")
    gate.set()
    result = fed.finish()
    attacker.loop_stop()
    attacker.disconnect()
    assert result.rejected == {"unsigned": 1, "bad_signature": 1}
    assert result.history[0]["participants"] == 3
    _assert_weights(result.final_weights, expected_fedavg(1))


def test_devices_ignore_a_global_model_the_aggregator_did_not_sign(mosquitto, tmp_path):
    aggregator_key = Ed25519PrivateKey.generate()
    device = DeviceClient("dev-a", 11, "spoof", broker_url(mosquitto), FixedUpdater(0),
                          aggregator_key=aggregator_key.public_key())
    device.start()
    try:
        spoof = Aggregator(AggregatorConfig(fleet="spoof", devices=dict(REGISTRY), rounds=1,
                                            policy=RoundPolicy(deadline_s=1.5, quorum=1.0)),
                           initial_weights(), broker_url(mosquitto), tmp_path,
                           signing_key=Ed25519PrivateKey.generate())  # not the key the device trusts
        result = spoof.run()
    finally:
        device.stop()
    assert result.history[0]["participants"] == 0 and device.rounds_sent == [] and device.errors >= 1


class _Diverging:
    """A device whose local training blows up (as a real one can, e.g. to NaN)."""

    def fit(self, model):
        raise FloatingPointError("local training diverged")


def test_a_device_that_cannot_train_declines_and_the_round_does_not_wait_for_it(mosquitto, tmp_path):
    fed = Federation(mosquitto, tmp_path, "decline", rounds=2, policy=RoundPolicy(deadline_s=300, quorum=0.6))
    fed.devices["dev-c"].updater = _Diverging()
    started = time.monotonic()
    result = fed.start().finish(timeout_s=60)
    assert time.monotonic() - started < 60  # far from the 300 s deadline
    assert [h["participants"] for h in result.history] == [2, 2]
    assert [h["declined"] for h in result.history] == [1, 1]
    _assert_weights(result.final_weights, expected_fedavg(2, participants=[[0, 1], [0, 1]]))


class _Exploding:
    """An honest device whose local training blew up without reaching NaN: a huge, finite delta."""

    def fit(self, model):
        return LocalUpdate([np.full_like(w, 1e6) for w in model.weights], num_examples=30, local_steps=3)


def test_an_exploded_update_is_dropped_before_it_wrecks_the_global_model(mosquitto, tmp_path):
    fed = Federation(mosquitto, tmp_path, "explode", rounds=1)
    fed.devices["dev-c"].updater = _Exploding()
    result = fed.start().finish()
    assert result.rejected == {"outlier_norm": 1}
    _assert_weights(result.final_weights, expected_fedavg(1, participants=[[0, 1]]))
