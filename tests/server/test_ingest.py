"""The bus ingest against a real Mosquitto: hostile payloads, the real edge alert path with strips and
consent, and the real aggregator's round events."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from broker.device_messages import canonical_json, encode_alert, encode_json_message, encode_status
from broker.fed_messages import fleet_id
from broker.round_events import encode_round_event
from broker.topics import FleetTopics
from broker.wire import Header, Kind, frame_message
from edge_runtime.alert_publisher import AlertPublisher
from edge_runtime.consent_gate import ConsentGate
from edge_runtime.event_strip import StripRecorder
from edge_runtime.runtime import BeatResult
from tests.server.conftest import PASSWORD, start_server, wait_until
from tools.server_bench import DashboardClient

pytestmark = pytest.mark.integration


def _alert(device: str, n: int, **extra) -> dict:
    return {"alert_id": f"{device}-x-{n}", "device": device, "patient": "pt9", "kind": "ventricular_run",
            "time": "2026-11-26T08:00:00.000+00:00", "beat_index": n, "beats": 3, "class": "V",
            "confidence_permille": 901, "heart_rate_bpm": 133, "model_version": "m1", "schema": 1, **extra}


def _client(rs, client_id: str) -> mqtt.Client:
    host, port = rs.broker_url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.connect(host, int(port))
    c.loop_start()
    return c


@pytest.fixture
def server_on_db(db_url, mosquitto):
    """The server on SQLite and on the real PostgreSQL (what one database accepts the other may not)."""
    from broker.launcher import broker_url

    rs, stop = start_server(db_url, broker_url(mosquitto), f"ward{abs(hash(db_url)) % 10**6}")
    yield rs
    stop()


def test_malformed_payloads_are_rejected_counted_and_ingest_keeps_serving(server_on_db):
    rs, t = server_on_db, FleetTopics(server_on_db.fleet)
    good = encode_alert(rs.fleet, 5, _alert("d5", 1))
    attacks = {
        "bad_status_bad_meta": (t.status("d5"), encode_json_message(Kind.STATUS, rs.fleet, 5, {"no": "state"})),
        "bad_status_truncated": (t.status("d5"), b"PW\x01"),
        "bad_alert_bad_crc": (t.alert("d5"), good[:-1] + bytes([good[-1] ^ 1])),
        "bad_alert_bad_meta": (t.alert("d5"), encode_json_message(Kind.ALERT, rs.fleet, 5, {"alert_id": "only"})),
        "bad_alert_nul": (t.alert("d5"), encode_json_message(Kind.ALERT, rs.fleet, 5, _alert("d5", 2, patient="a\x00b"))),
        "bad_alert_range": (t.alert("d5"), frame_message(Header(Kind.ALERT, fleet_id(rs.fleet), 0, 5), canonical_json(
            _alert("d5", 3, extra=12345)).replace(b"12345", b"1e999"))),  # parses to inf
        "wrong_fleet": (t.alert("d5"), encode_alert("otherfleet", 5, _alert("d5", 4))),
        "device_mismatch": (t.alert("d6"), encode_alert(rs.fleet, 5, _alert("d5", 5))),
        "bad_round_bad_meta": (t.round_event(1, "closed"), b"{\"schema\": 1"),
        "release_corrupt": (t.release(), b"not a release"),
    }
    attacker = _client(rs, "mallory")
    for topic, payload in attacks.values():
        attacker.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
    attacker.publish(t.alert("d5"), good, qos=1).wait_for_publish(timeout=10)  # ingest still serving
    attacker.publish(t.status("stranger"), encode_status(rs.fleet, 77, {"state": "online"}), qos=1).wait_for_publish(10)
    ed = DashboardClient(rs.host, rs.port)
    assert ed.login("ed", PASSWORD)
    counters = wait_until(lambda: (c := ed.get_json("/api/counters")).get("stored.status") and c)
    wait_until(lambda: ed.get_json("/api/counters").get("stored.alert") == 1)
    counters = ed.get_json("/api/counters")
    attacker.loop_stop()
    assert {k.removeprefix("rejected."): v for k, v in counters.items() if k.startswith("rejected.")} == \
        {reason: 1 for reason in attacks}
    devices = {d["name"]: d for d in ed.get_json("/api/devices")["devices"]}
    assert devices["stranger"]["enrolled"] is False and devices["stranger"]["state"] == "online"
    security = ed.get_json("/api/security")
    assert security["totals"] == {reason: 1 for reason in attacks}


class _Stream:
    """Samples handed to the strip recorder in step with the beats, as the device loop does (a beat is
    detected a little after its R peak, so the samples just after it are already held)."""

    def __init__(self, strips: StripRecorder, signal: np.ndarray) -> None:
        self.strips, self.signal, self.pos = strips, signal, 0

    def until(self, sample: int) -> None:
        list(self.strips.tap([self.signal[self.pos:sample]]))
        self.pos = max(self.pos, sample)


def _beats(publisher: AlertPublisher, stream: _Stream, start: int, runs: int) -> None:
    """Normal beats with a 3-beat V run every 8 beats: one ventricular_run alert per run."""
    for k in range(runs * 8):
        sample = start + 300 * k
        stream.until(sample + 90)
        label = "V" if k % 8 in (4, 5, 6) else "N"
        beat = BeatResult(sample, sample / 360.0, label, 0.93, 72.0, "m1")
        stream.strips.on_beat(beat)
        publisher.on_beat(beat)


def test_edge_alerts_carry_a_strip_only_after_the_patient_consents(running_server, tmp_path):
    rs = running_server
    signal = np.sin(np.arange(360 * 60) / 25.0) * 1.2
    strips = StripRecorder(360.0)
    stream = _Stream(strips, signal)
    gate = ConsentGate(rs.fleet, "ecg1", "pt42", rs.broker_url)
    gate.start()
    publisher = AlertPublisher("ecg1", 42, rs.fleet, rs.broker_url, tmp_path / "spool.sqlite", "pt42",
                               strips=strips, consent=gate)
    publisher.start()
    clara = DashboardClient(rs.host, rs.port)
    assert clara.login("clara", PASSWORD)
    _beats(publisher, stream, 1000, runs=1)  # no consent record yet: no strip
    first = wait_until(lambda: clara.get_json("/api/alerts")["alerts"])
    assert "strip" not in first[0]
    resp, _ = clara.request("PUT", "/api/consents/pt42", json.dumps({"training": False, "strip": True}).encode(),
                            {"Content-Type": "application/json"})
    assert resp.status == 200
    wait_until(gate.allows_strip)
    _beats(publisher, stream, 5000, runs=1)
    alerts = wait_until(lambda: (a := clara.get_json("/api/alerts")["alerts"]) and len(a) == 2 and a)
    publisher.close()
    gate.stop()
    strip = alerts[0]["strip"]
    assert strip["fs_hz"] == 360 and strip["gain"] == 1000 and len(strip["samples"]) > 360
    assert [label for _, label in strip["beats"]].count("V") == 3
    i = strip["beats"][0][0]
    assert strip["samples"][i] == int(round(1000 * signal[strip["start"] + i]))  # the real samples, scaled
    with rs.store.session() as repo:
        assert [e.action for e in repo.audit_log()][-1] == "login"
        assert repo.consent(rs.fleet, "pt42").strip is True


def test_an_imu_device_s_inactivity_alert_and_activity_status_are_stored(running_server, tmp_path):
    """A kind the server has no special case for (``prolonged_inactivity`` of ``edge run --task har``), with no
    ECG strip and heart rate 0, is stored and listed like any alert; the activity status fields are kept."""
    rs = running_server
    publisher = AlertPublisher("imu1", 7, rs.fleet, rs.broker_url, tmp_path / "spool.sqlite", "pt3")
    publisher.extra_status.update({"activity_seconds": {"laying": 19}, "activity_current": "laying",
                                   "activity_windows": 14, "inactivity_alerts": 1})
    publisher.start()
    publisher.submit(_alert("imu1", 1, kind="prolonged_inactivity", **{"class": "laying"}, heart_rate_bpm=0,
                            beats=6, inactive_s=9, window_index=5))
    clara = DashboardClient(rs.host, rs.port)
    assert clara.login("clara", PASSWORD)
    alerts = wait_until(lambda: clara.get_json("/api/alerts")["alerts"])
    publisher.close()
    assert alerts[0]["kind"] == "prolonged_inactivity" and alerts[0]["class"] == "laying"
    assert alerts[0]["heart_rate_bpm"] == 0 and "strip" not in alerts[0]
    status = wait_until(lambda: (d := _device_status(rs, "imu1")) and d.get("state") == "offline" and d)
    assert status["activity_seconds"] == {"laying": 19} and status["inactivity_alerts"] == 1


def _device_status(rs, name: str) -> dict:
    with rs.store.session() as repo:
        dev = repo.device(rs.fleet, name)
        return dict(dev.status) if dev is not None else {}


def test_the_real_aggregator_round_events_fill_the_rounds_page(running_server, tmp_path):
    from tests.test_federation_mqtt import Federation
    from training.federated.round_events import RoundEventPublisher

    rs = running_server

    class _Broker:  # Federation wants an object with host and port
        host, port = rs.broker_url.removeprefix("mqtt://").split(":")

    fed = Federation(_Broker, tmp_path, rs.fleet, rounds=2)
    fed.aggregator.cfg = dataclasses.replace(fed.aggregator.cfg, observer=RoundEventPublisher(rs.fleet))
    fed.start()
    # a hostile update during the run: the aggregator's rejection reaches the server as a security event
    wait_until(fed.aggregator.link.ready.is_set)  # subscribed: the garbage below reaches it
    attacker = _client(rs, "mallory-agg")
    attacker.publish(FleetTopics(rs.fleet).update(1, "dev-a"), b"garbage", qos=1).wait_for_publish(10)
    result = fed.finish()
    ed = DashboardClient(rs.host, rs.port)
    assert ed.login("ed", PASSWORD)
    rounds = wait_until(lambda: (r := ed.get_json("/api/rounds")["rounds"]) and
                        all(x["state"] == "closed" for x in r) and len(r) == 2 and r)
    attacker.loop_stop()
    assert [r["participants"] for r in rounds] == [h["participants"] for h in result.history]
    assert [r["bytes_received"] for r in rounds] == [h["bytes_received"] for h in result.history]
    assert rounds[0]["selected"] == 3 and rounds[0]["strategy"] == "fedavg"
    security = wait_until(lambda: ed.get_json("/api/security")["totals"])
    assert sum(security.values()) == sum(result.rejected.values()) >= 1


def test_round_event_publisher_carries_metrics_and_the_ledger(running_server):
    from training.federated.round_events import RoundEventPublisher

    rs = running_server
    link_client = _client(rs, "agg-events")

    class _Link:
        def publish(self, topic, payload, qos=1, retain=False):
            return link_client.publish(topic, payload, qos=qos, retain=retain)

    obs = RoundEventPublisher(rs.fleet)
    obs.opened(_Link(), 1, "dp_fedavg", ["a", "b"], 5)
    obs.closed(_Link(), {"round": 1, "epoch": 1, "selected": 2, "participants": 2, "late_accepted": 0, "declined": 0,
                         "loss": 0.5, "bytes_received": 2048, "model_bytes": 100, "bytes_down": 200, "quorum_met": True,
                         "rejected": {}, "seconds": 0.7, "val_macro_f1": 0.42, "val_loss": float("nan"),
                         "privacy": {"round": 1, "epsilon_rdp": 0.8, "epsilon_pld": 0.7, "delta": 1e-5}},
               "dp_fedavg", ["a", "b"], 3.0)
    ed = DashboardClient(rs.host, rs.port)
    assert ed.login("ed", PASSWORD)
    privacy = wait_until(lambda: (p := ed.get_json("/api/privacy"))["rounds"] and p)
    link_client.loop_stop()
    assert privacy["per_device"] == {"a": 0.8, "b": 0.8} and privacy["left"] == pytest.approx(2.2)
    rounds = ed.get_json("/api/rounds")["rounds"]
    assert rounds[0]["metrics"] == {"val_macro_f1": 0.42, "val_loss": None}
    assert encode_round_event  # the module the aggregator uses is the one the server decodes


def test_a_device_without_training_consent_declines_and_the_round_goes_on(running_server, tmp_path):
    """Consent set on the server reaches the device; the federation does not wait for the declining one."""
    from tests.test_federation_mqtt import Federation

    rs = running_server

    class _Broker:
        host, port = rs.broker_url.removeprefix("mqtt://").split(":")

    clara = DashboardClient(rs.host, rs.port)
    assert clara.login("clara", PASSWORD)
    for patient, training in (("pa", True), ("pb", True), ("pc", False)):
        resp, _ = clara.request("PUT", f"/api/consents/{patient}", json.dumps({"training": training,
                                                                               "strip": False}).encode(),
                                {"Content-Type": "application/json"})
        assert resp.status == 200
    fed = Federation(_Broker, tmp_path, rs.fleet, rounds=1)
    fed.aggregator.consent = None  # the device's own refusal is tested here (tests/test_consent_selection.py:
    #                                the aggregator's, which would not even select dev-c)
    gates = {name: ConsentGate(rs.fleet, name, patient, rs.broker_url)
             for name, patient in zip(fed.devices, ("pa", "pb", "pc"))}
    for name, gate in gates.items():
        gate.start()
        fed.devices[name].consent = gate
    for gate in gates.values():
        wait_until(gate.heard.is_set)
    result = fed.start().finish()
    for gate in gates.values():
        gate.stop()
    assert result.history[0]["participants"] == 2 and result.history[0]["declined"] == 1
    assert fed.updaters["dev-c"].calls == 0  # it never trained
