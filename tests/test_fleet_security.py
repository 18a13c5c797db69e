"""The production broker set-up: TLS with client certificates and ACLs, on a real Mosquitto."""
import getpass
import queue
import ssl
import time

import paho.mqtt.client as mqtt

import pytest

from broker.fleet_security import write_fleet_security
from broker.launcher import MosquittoBroker, free_port
from broker.mqtt_link import MqttLink, TlsFiles
from broker.topics import FleetTopics

pytestmark = pytest.mark.integration


@pytest.fixture
def secure_broker(tmp_path):
    port = free_port()
    sec = write_fleet_security(tmp_path / "sec", "ward", ["p101", "p106"], port=port, host="127.0.0.1",
                               user=getpass.getuser())
    broker = MosquittoBroker(port=port, state_dir=tmp_path / "sec" / "state", config=sec.config)
    broker.start()
    yield sec, port
    broker.close()


def _link(sec, port, name, subs=(), inbox=None):
    cert, key = sec.client(name)
    link = MqttLink(f"mqtts://127.0.0.1:{port}", f"pw-ward-{name}", list(subs),
                    (lambda m: inbox.put((m.topic, m.payload))) if inbox is not None else (lambda m: None),
                    tls=TlsFiles(str(sec.ca), str(cert), str(key)))
    link.start(timeout_s=10)
    return link


def test_devices_write_only_their_own_topics(secure_broker):
    sec, port = secure_broker
    topics = FleetTopics("ward")
    inbox = queue.Queue()
    agg = _link(sec, port, "aggregator", [topics.all_updates(), topics.all_alerts()], inbox)
    dev = _link(sec, port, "p101")
    time.sleep(0.3)  # subscriptions settle
    dev.publish(topics.update(1, "p101"), b"mine", qos=1).wait_for_publish(5)
    dev.publish(topics.update(1, "p106"), b"impersonation", qos=1).wait_for_publish(5)
    dev.publish(topics.alert("p106"), b"fake alert", qos=1).wait_for_publish(5)
    dev.publish(topics.global_model(2), b"fake model", qos=1).wait_for_publish(5)
    got = [inbox.get(timeout=5)]
    time.sleep(0.5)
    while not inbox.empty():
        got.append(inbox.get())
    assert got == [(topics.update(1, "p101"), b"mine")]
    for link in (agg, dev):
        link.stop()


def _drain(inbox, first_timeout=5.0):
    got = [inbox.get(timeout=first_timeout)]
    time.sleep(0.5)
    while not inbox.empty():
        got.append(inbox.get())
    return got


def test_secure_aggregation_shares_reach_only_their_device(secure_broker):
    sec, port = secure_broker
    topics = FleetTopics("ward")
    inbox101, inbox106 = queue.Queue(), queue.Queue()
    agg = _link(sec, port, "aggregator")
    # each device asks for every secagg topic: the broker's ACL, not the subscription, must do the filtering
    dev101 = _link(sec, port, "p101", ["pw/ward/secagg/#"], inbox101)
    dev106 = _link(sec, port, "p106", ["pw/ward/secagg/#"], inbox106)
    time.sleep(0.3)  # subscriptions settle
    agg.publish(topics.secagg(3), b"adverts", qos=1).wait_for_publish(5)
    agg.publish(topics.secagg(3, "p101"), b"shares for p101", qos=1).wait_for_publish(5)
    agg.publish(topics.secagg(3, "p106"), b"shares for p106", qos=1).wait_for_publish(5)
    dev101.publish(topics.secagg(3, "p106"), b"forged shares", qos=1).wait_for_publish(5)
    dev101.publish(topics.secagg(3), b"forged adverts", qos=1).wait_for_publish(5)
    assert sorted(_drain(inbox101)) == [(topics.secagg(3), b"adverts"), (topics.secagg(3, "p101"), b"shares for p101")]
    assert sorted(_drain(inbox106)) == [(topics.secagg(3), b"adverts"), (topics.secagg(3, "p106"), b"shares for p106")]
    for link in (agg, dev101, dev106):
        link.stop()


def test_a_client_without_a_certificate_is_refused(secure_broker):
    sec, port = secure_broker
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="intruder")
    c.tls_set(ca_certs=str(sec.ca))
    try:
        c.connect("127.0.0.1", port)
        c.loop_start()
        time.sleep(1.5)
        connected = c.is_connected()
        c.loop_stop()
    except (ssl.SSLError, OSError):
        connected = False
    assert not connected
