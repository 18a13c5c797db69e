"""The aggregator's screen on its own: routing a message, verifying and decoding an update, counting rejections.
No service and no broker: the screen needs only the fleet's registry and the engine's counters."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.device_messages import encode_status
from broker.mqtt_link import Message
from broker.topics import FleetTopics
from tools.aggregator_bench import (
    FLEET,
    classifier_weights,
    device_names,
    update_messages,
)
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.round_engine import Rejected, RoundEngine
from training.federated.strategies import FedAvg
from training.federated.update_screen import UpdateScreen

TOPICS = FleetTopics(FLEET)
DEVICES = device_names(3)


def _screen(keys: dict | None = None) -> UpdateScreen:
    cfg = AggregatorConfig(FLEET, DEVICES, rounds=2, policy=RoundPolicy(), honour_consent=False,
                           device_keys=keys)
    engine = RoundEngine(FedAvg(), list(DEVICES), cfg.policy, cfg.rounds, classifier_weights())
    engine.open_round()
    return UpdateScreen(cfg, engine)


def _reason(call) -> str:
    with pytest.raises(Rejected) as caught:
        call()
    return caught.value.reason


def test_route_hands_back_a_registered_update_notes_a_status_and_refuses_the_rest():
    screen = _screen()
    name, data = update_messages(DEVICES, 1, seed=0)[0]

    topic = screen.route(Message(TOPICS.update(1, name), data, 1, 1))
    status = encode_status(FLEET, DEVICES[name], {"state": "online", "declined_round": 1, "reason": "battery"})
    noted = screen.route(Message(TOPICS.status(name), status, 2, 1))

    assert (topic.kind, topic.device, topic.round) == ("update", name, 1)
    assert noted is None and screen.status[name]["state"] == "online"
    assert name in screen.engine.declined  # the round stops waiting for it
    assert _reason(lambda: screen.route(Message("not/a/fleet/topic", b"", 3, 1))) == "bad_topic"
    assert _reason(lambda: screen.route(Message(TOPICS.update(1, "stranger"), data, 4, 1))) == "unknown_device"
    assert _reason(lambda: screen.route(Message(TOPICS.status(name), b"PW\x01", 5, 1))) == "bad_status"
    assert screen.engine.round_counts["bytes_received"] == 2 * len(data)  # both updates, refused or not


def test_decode_checks_the_fleet_and_the_device_id_and_count_files_the_reason():
    screen = _screen()
    (first, data), (second, _) = update_messages(DEVICES, 1, seed=0)[:2]

    round_, update = screen.decode(first, data)
    rejected = Rejected(_reason(lambda: screen.decode(second, data)), "sent with the first device's id")
    screen.count(rejected, TOPICS.update(1, second))

    assert round_ == 1 and update.device == first and update.num_examples > 0
    assert rejected.reason == "device_mismatch"
    assert screen.engine.rejected == {"device_mismatch": 1}
    assert screen.engine.round_counts["rejected_device_mismatch"] == 1
    other = UpdateScreen(AggregatorConfig("another-fleet", DEVICES, rounds=2, honour_consent=False), screen.engine)
    assert _reason(lambda: other.decode(first, data)) == "wrong_fleet"


def test_a_signed_fleet_refuses_a_forged_signature_and_a_device_without_a_key():
    keys = {name: Ed25519PrivateKey.generate() for name in DEVICES}
    public = {name: key.public_key() for name, key in keys.items()}
    screen = _screen({n: k for n, k in public.items() if n != "dev000002"})
    signed = dict(update_messages(DEVICES, 1, seed=0, keys=keys))
    forged = dict(update_messages(DEVICES, 1, seed=0, keys={n: Ed25519PrivateKey.generate() for n in DEVICES}))

    round_, update = screen.decode("dev000000", signed["dev000000"])

    assert round_ == 1 and update.device == "dev000000"
    assert _reason(lambda: screen.decode("dev000001", forged["dev000001"])) == "bad_signature"
    assert _reason(lambda: screen.decode("dev000002", signed["dev000002"])) == "unknown_device"
