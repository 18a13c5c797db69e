"""Alerts: episodes from beats, and delivery through a real Mosquitto without loss."""
import queue
import threading

import paho.mqtt.client as mqtt
import pytest

from broker.device_messages import decode_alert, encode_alert
from broker.launcher import MosquittoBroker, broker_url
from broker.topics import FleetTopics
from broker.wire import WireError
from edge_runtime.alert_publisher import AlertPublisher
from edge_runtime.alert_spool import AlertSpool
from edge_runtime.alerts import AlertBuilder, AlertPolicy
from edge_runtime.runtime import BeatResult


def _beats(labels, rr_s=0.8):
    return [BeatResult(int(i * rr_s * 360), i * rr_s, c, 0.9, 60 / rr_s, "v1") for i, c in enumerate(labels)]


def test_a_run_of_three_v_beats_raises_one_alert_at_its_third_beat():
    builder = AlertBuilder("p1", "anon-7", AlertPolicy(run_length=3, summary_every_s=1000))
    out = [(i, a) for i, b in enumerate(_beats("NNVVVVVNVVNSSSN")) for a in builder.on_beat(b)]
    kinds = [(i, a["kind"]) for i, a in out]
    assert kinds == [(4, "ventricular_run"), (13, "supraventricular_run")]
    first = out[0][1]
    assert first["beats"] == 3 and first["class"] == "V" and first["beat_index"] == int(2 * 0.8 * 360)
    summary = builder.flush()[0]
    assert summary["kind"] == "summary" and summary["counts"] == {"N": 5, "S": 3, "V": 7}
    assert len({a["alert_id"] for _, a in out} | {summary["alert_id"]}) == 3


def test_summaries_close_every_window():
    builder = AlertBuilder("p1", "anon", AlertPolicy(summary_every_s=10))
    alerts = [a for b in _beats("N" * 40, rr_s=1.0) for a in builder.on_beat(b)]
    assert [a["beats"] for a in alerts] == [11, 11, 11]


def test_alert_messages_roundtrip_and_reject_garbage():
    builder = AlertBuilder("p1", "anon")
    builder.on_beat(_beats("N")[0])
    alert = builder.flush()[0]
    header, back = decode_alert(encode_alert("fleet", 7, alert))
    assert back == alert and header.device_id == 7
    with pytest.raises(WireError):
        decode_alert(encode_alert("fleet", 7, alert)[:-3])
    with pytest.raises(ValueError):
        encode_alert("fleet", 7, {**alert, "kind": "panic"})


def _subscriber(broker, topic, client_id):
    inbox = queue.Queue()
    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.on_connect = lambda cl, *_: cl.subscribe(topic, qos=1)
    c.on_subscribe = lambda *_: ready.set()
    c.on_message = lambda _c, _u, m: inbox.put(bytes(m.payload))
    c.connect(broker.host, broker.port)
    c.loop_start()
    assert ready.wait(10)
    return c, inbox


def _drain(inbox, n, timeout=30):
    return [decode_alert(inbox.get(timeout=timeout))[1]["alert_id"] for _ in range(n)]


def test_alerts_survive_a_broker_outage_and_a_device_restart(tmp_path):
    broker = MosquittoBroker(state_dir=tmp_path / "broker")
    broker.start()
    topics = FleetTopics("ward")
    sub, inbox = _subscriber(broker, topics.all_alerts(), "monitor")
    try:
        broker.stop()  # the device starts while the broker is down
        spool = tmp_path / "spool.sqlite"
        first = AlertPublisher("p7", 7, "ward", broker_url(broker), spool, "anon-7",
                               AlertPolicy(summary_every_s=5), drain_timeout_s=0.2)
        first.start()
        for b in _beats("NNVVVNNNN" * 4, rr_s=0.8):
            first.on_beat(b)
        generated = [row[1] for row in first.spool.oldest(100)]
        first.close()  # powered off with everything still spooled
        assert len(generated) >= 5 and AlertSpool(spool).depth() == len(generated) + 1  # + the final summary
        broker.start()
        second = AlertPublisher("p7", 7, "ward", broker_url(broker), spool, "anon-7", drain_timeout_s=20)
        second.start()
        second.close()  # drains before it returns
        received = _drain(inbox, len(generated) + 1)
        assert received[:len(generated)] == generated  # all of them, in order
        assert AlertSpool(spool).depth() == 0 and len(second.latencies_ms) == 0  # sent from the spool
    finally:
        sub.loop_stop()
        sub.disconnect()
        broker.close()


def test_live_alerts_measure_beat_to_alert_latency(mosquitto, tmp_path):
    topics = FleetTopics("live")
    sub, inbox = _subscriber(mosquitto, topics.all_alerts(), "live-monitor")
    pub = AlertPublisher("p9", 9, "live", broker_url(mosquitto), tmp_path / "s.sqlite", "anon")
    pub.start()
    assert pub.link.connected.wait(10)
    for b in _beats("NVVVN" * 6):
        pub.on_beat(b)
    pub.close()
    ids = _drain(inbox, 7)
    assert len(set(ids)) == 7 and len(pub.latencies_ms) == 7 and all(v > 0 for v in pub.latencies_ms)
    sub.loop_stop()
    sub.disconnect()
