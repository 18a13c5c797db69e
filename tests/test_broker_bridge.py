"""Ward Mosquittos bridged to a central Mosquitto (broker/bridge.py): device traffic goes up, models come down."""
from __future__ import annotations

import datetime as dt
import random
import time

import numpy as np
import pytest

from broker.bridge import BridgeSpec, WardHierarchy
from broker.device_messages import decode_alert, decode_status
from broker.fed_messages import fleet_id
from broker.mqtt_link import MqttLink
from broker.topics import FleetTopics
from broker.wire import Encoding, Kind, decode_tensors, encode_tensors
from tests.mqtt_inbox import Inbox
from tools.fleet_sim.device import SimDevice

FLEET = "bridged"


@pytest.fixture(scope="module")
def wards():
    from broker.launcher import BrokerUnavailable

    try:
        hierarchy = WardHierarchy(2, (FLEET,))
        hierarchy.start()
    except BrokerUnavailable as exc:
        pytest.fail(f"{exc}; the bridge tests need Mosquitto (make setup installs it)")
    yield hierarchy
    hierarchy.close()


def test_bridge_config_names_every_fleet_topic_in_the_right_direction():
    spec = BridgeSpec("ward7", "10.0.0.1", 1883, ("a", "b"))
    lines = spec.config_lines()
    assert "connection pw-bridge-ward7" in lines and "address 10.0.0.1:1883" in lines
    assert "topic pw/a/alert/+ out 1" in lines and "topic pw/b/global/+ in 1" in lines
    assert "topic pw/a/device/+/status out 1" in lines and "topic pw/b/release in 1" in lines
    with pytest.raises(ValueError):
        BridgeSpec("ward/1", "h", 1883, ("a",))
    with pytest.raises(ValueError):
        BridgeSpec("w", "h", 1883, ("a/#",))


@pytest.mark.integration
def test_ward_alerts_statuses_and_updates_reach_the_centre(wards):
    topics = FleetTopics(FLEET)
    centre = Inbox(wards.central_url, "pw-test-centre", [topics.all_alerts(), topics.all_statuses(),
                                                          topics.all_updates()])
    try:
        for w, url in enumerate(wards.ward_urls):
            dev = SimDevice.create(w, seed=0, slow_fraction=0.0)
            link = MqttLink(url, f"pw-test-ward-dev{w}", [], lambda m: None)
            link.start()
            alert = dev.next_alert(random.Random(w), dt.datetime.now(dt.timezone.utc))
            for topic, payload, retain in ((topics.status(dev.name), dev.status_payload(FLEET), True),
                                           (topics.alert(dev.name), dev.alert_payload(FLEET, alert), False),
                                           (topics.update(1, dev.name), dev.update_payload(FLEET, 1, ((32, 5), (5,)), 0), False)):
                info = link.publish(topic, payload, qos=1, retain=retain)
                info.wait_for_publish(10)
                assert info.is_published()
            link.stop()
        got = centre.wait_for(6)
    finally:
        centre.close()
    by_kind: dict[str, list] = {}
    for m in got:
        by_kind.setdefault(m.topic.split("/")[2], []).append(m)
    assert len(by_kind["alert"]) == len(by_kind["device"]) == len(by_kind["update"]) == 2
    assert {decode_alert(m.payload)[1]["device"] for m in by_kind["alert"]} == {"sim000000", "sim000001"}
    assert all(decode_status(m.payload)[1]["state"] == "online" for m in by_kind["device"])
    assert all(decode_tensors(m.payload).header.round == 1 for m in by_kind["update"])


@pytest.mark.integration
def test_global_models_and_releases_reach_every_ward_also_as_retained(wards):
    topics = FleetTopics(FLEET)
    weights = [np.linspace(-1, 1, 4757, dtype=np.float32)]  # a whole model: ~19 KB on the wire
    model = encode_tensors(Kind.MODEL, fleet_id(FLEET), 3, 0, weights, Encoding.FLOAT32, meta={"round": 3})
    live = [Inbox(url, f"pw-test-live{i}", [topics.all_globals()]) for i, url in enumerate(wards.ward_urls)]
    try:
        centre = MqttLink(wards.central_url, "pw-test-aggregator", [], lambda m: None)
        centre.start()
        centre.publish(topics.global_model(3), model, qos=1, retain=True).wait_for_publish(10)
        centre.publish(topics.release(), b"release-bytes", qos=1, retain=True).wait_for_publish(10)
        centre.stop()
        for inbox in live:
            (m,) = inbox.wait_for(1)
            assert m.payload == model
    finally:
        for inbox in live:
            inbox.close()
    time.sleep(0.5)
    # a device that connects later to its ward gets the retained model and release from the ward broker
    for i, url in enumerate(wards.ward_urls):
        late = Inbox(url, f"pw-test-late{i}", [topics.all_globals(), topics.release()])
        try:
            got = {m.topic: m.payload for m in late.wait_for(2)}
        finally:
            late.close()
        assert np.array_equal(decode_tensors(got[topics.global_model(3)]).tensors[0], weights[0])
        assert got[topics.release()] == b"release-bytes"
