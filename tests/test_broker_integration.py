"""Wire messages through a real Mosquitto (started on a free loopback port by the fixture)."""
import queue

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from broker.chunking import Reassembler, split_message
from broker.launcher import EmbeddedBroker
from broker.mqtt_link import MqttLink
from broker.topics import FleetTopics
from broker.wire import Encoding, Kind, decode_tensors, encode_tensors
from tests.federation_helpers import wait_until

pytestmark = pytest.mark.integration


def _client(broker, name, inbox=None, topic=None, clean=True):
    """A connected paho client; with ``inbox`` it has subscribed (SUBACK received) before returning."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, clean_session=clean)
    subscribed = queue.Queue()
    if inbox is not None:
        c.on_connect = lambda cl, *_: cl.subscribe(topic, qos=1)  # resubscribes after reconnects
        c.on_subscribe = lambda *_: subscribed.put(True)
        c.on_message = lambda cl, ud, msg: inbox.put((msg.topic, msg.payload))
    connected = queue.Queue()
    c.on_connect_fail = lambda *_: connected.put(False)
    prev = c.on_connect

    def on_connect(cl, userdata, flags, rc, props=None):
        if prev:
            prev(cl, userdata, flags, rc, props)
        connected.put(True)

    c.on_connect = on_connect
    c.connect(broker.host, broker.port, keepalive=10)
    c.loop_start()
    assert connected.get(timeout=10)
    if inbox is not None:
        assert subscribed.get(timeout=10)
    return c


def _update(rng):
    weights = [rng.normal(size=(7, 1, 8)).astype(np.float32), rng.normal(size=(32, 5)).astype(np.float32)]
    return weights, encode_tensors(Kind.UPDATE, 1, 5, 101, weights, Encoding.INT8, meta={"num_examples": 10})


def _roundtrip(broker):
    topics = FleetTopics("test")
    inbox: queue.Queue = queue.Queue()
    sub = _client(broker, "aggregator", inbox, topics.all_updates())
    pub = _client(broker, "dev-101")
    weights, message = _update(np.random.default_rng(0))
    frames = split_message(message, message_id=1, chunk_size=256)
    for f in reversed(frames):  # order must not matter
        pub.publish(topics.update(5, "dev-101"), f, qos=1).wait_for_publish(timeout=10)
    reassembler, result = Reassembler(), None
    for _ in frames:
        topic, payload = inbox.get(timeout=10)
        assert topic == topics.update(5, "dev-101")
        result = reassembler.feed(payload) or result
    for c in (sub, pub):
        c.loop_stop()
        c.disconnect()
    decoded = decode_tensors(result)
    assert decoded.meta == {"num_examples": 10}
    for got, want in zip(decoded.tensors, weights):
        np.testing.assert_allclose(got, want, atol=np.abs(want).max() / 127)


def test_chunked_update_through_mosquitto(mosquitto):
    _roundtrip(mosquitto)


def test_embedded_broker_carries_the_same_bytes():
    broker = EmbeddedBroker()
    broker.start()
    try:
        _roundtrip(broker)
    finally:
        broker.close()


def test_queued_qos1_message_survives_a_broker_restart(mosquitto):
    topics = FleetTopics("restart")
    inbox: queue.Queue = queue.Queue()
    sub = _client(mosquitto, "agg-persistent", inbox, topics.all_updates(), clean=False)
    sub.loop_stop()
    sub.disconnect()  # persistent session: the broker queues QoS 1 messages for it
    pub = _client(mosquitto, "dev-queued")
    _, message = _update(np.random.default_rng(1))
    pub.publish(topics.update(5, "dev-101"), message, qos=1).wait_for_publish(timeout=10)
    pub.loop_stop()
    pub.disconnect()
    mosquitto.restart()
    sub = _client(mosquitto, "agg-persistent", inbox, topics.all_updates(), clean=False)
    topic, payload = inbox.get(timeout=10)
    sub.loop_stop()
    sub.disconnect()
    assert payload == message


def test_link_is_ready_only_once_its_subscriptions_are_acknowledged_again_after_a_restart(mosquitto):
    """``MqttLink.start`` returns once every SUBACK is in (``ready``): a message published the moment it
    returns reaches it. A broker restart clears ``ready`` until the re-subscriptions are acknowledged."""
    topics = FleetTopics("ready")
    inbox: queue.Queue = queue.Queue()
    url = f"mqtt://{mosquitto.host}:{mosquitto.port}"
    link = MqttLink(url, "ready-sub", [topics.all_updates(), topics.all_globals()], lambda m: inbox.put(m.payload))
    link.start()
    pub = _client(mosquitto, "ready-pub")
    try:
        assert link.ready.is_set()
        pub.publish(topics.update(1, "dev-1"), b"first", qos=1).wait_for_publish(timeout=10)
        assert inbox.get(timeout=10) == b"first"
        mosquitto.restart()
        wait_until(lambda: link.connects >= 2 and link.ready.is_set(), timeout_s=30, what="re-subscribed")
        pub.publish(topics.global_model(2), b"after-restart", qos=1).wait_for_publish(timeout=10)
        assert inbox.get(timeout=10) == b"after-restart"
    finally:
        pub.loop_stop()
        pub.disconnect()
        link.stop()
    assert not link.ready.is_set()
