"""The dashboard acting on the fleet, in a real headless Chromium over a real Mosquitto: an engineer rolls the
fleet back (a signed, retained pin a subscriber verifies with the release public key; an audit row), a
clinician corrects the beat labels of an alert (signed labels on that device's topic only, verified with the
clinic's public key); anonymous and wrong-role requests are refused, hostile strings stay text, and without
the keys the buttons are absent and the page names the CLI command.
"""
from __future__ import annotations

import json
import queue
import time

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from broker.clinician_labels import verify_labels
from broker.device_messages import encode_alert
from broker.launcher import broker_url
from broker.model_pin import Pin, verify_pin, sign_pin
from broker.model_release import Release, sign_release
from broker.topics import FleetTopics
from tests.server.conftest import PASSWORD, start_server, wait_until
from tests.server.test_browser import XSS, _login
from tools.server_bench import DashboardClient

pytestmark = pytest.mark.integration


class Subscriber:
    """A plain MQTT client on the given topics; messages land in a queue."""

    def __init__(self, url: str, client_id: str, topics: list[str]) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.got: queue.Queue = queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.c.on_message = lambda _c, _u, m: self.got.put((m.topic, bytes(m.payload), m.retain))
        subscribed = queue.Queue()
        self.c.on_subscribe = lambda *a: subscribed.put(True)
        self.c.connect(host, int(port))
        self.c.loop_start()
        for t in topics:
            self.c.subscribe(t, qos=1)
            subscribed.get(timeout=10)

    def publish(self, topic: str, data: bytes, retain: bool = True) -> None:
        self.c.publish(topic, data, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def keyed_server(mosquitto, tmp_path):
    release_key, labels_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    fleet = f"ward{time.monotonic_ns() % 10**8}"
    rs, stop = start_server(str(tmp_path / "server.db"), broker_url(mosquitto), fleet,
                            release_key=release_key.public_key(), release_signing_key=release_key,
                            labels_key=labels_key)
    yield rs, release_key, labels_key
    stop()


@pytest.fixture
def driver(chromium):
    """The session's Chromium; left on a blank page so its live-event stream does not hold the server open."""
    yield chromium
    chromium.get("about:blank")


def _post(client: DashboardClient, path: str, body: dict):
    resp, data = client.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return resp.status, data


def test_engineer_rolls_back_from_the_models_page(keyed_server, driver):
    rs, release_key, _ = keyed_server
    topics = FleetTopics(rs.fleet)
    bus = Subscriber(rs.broker_url, "pin-watcher", [topics.pin()])
    try:
        for version in (1, 2):
            bus.publish(topics.release(), sign_release(Release(rs.fleet, version, b"model%d" % version, b"{}", "d"),
                                                       release_key))
        anon, clara, ed = (DashboardClient(rs.host, rs.port) for _ in range(3))
        assert clara.login("clara", PASSWORD) and ed.login("ed", PASSWORD)
        wait_until(lambda: len(ed.get_json("/api/releases")["releases"]) == 2)
        # refused: anonymous, a clinician, an unknown version
        assert _post(anon, "/api/releases/rollback", {"version": 1})[0] == 401
        assert _post(clara, "/api/releases/rollback", {"version": 1})[0] == 403
        assert _post(ed, "/api/releases/rollback", {"version": 7})[0] == 422
        assert bus.got.empty()
        # the engineer presses the button
        _login(driver, rs, "ed")
        driver.get(rs.url + "/models")
        buttons = driver.find_elements(By.CSS_SELECTOR, "#releases button.rollback")
        assert [b.text for b in buttons] == ["Roll back to version 1"]
        assert not driver.find_elements(By.ID, "rollback-hint")
        buttons[0].click()
        driver.switch_to.alert.accept()
        topic, data, retained = bus.got.get(timeout=20)
        pin = verify_pin(data, release_key.public_key())
        assert topic == topics.pin() and (pin.fleet, pin.version, pin.revoked) == (rs.fleet, 1, (2,))
        # the page confirms, then reloads (on the pin's SSE event or 1.5 s later) into the pinned state: accept
        # either, read in one JavaScript call (a reload can replace any element found first)
        wait_until(lambda: driver.execute_script(
            "const r = document.getElementById('rollback-result'), p = document.querySelector('#pins td.pinned');"
            "return (r && r.textContent.includes('Pinned version 1')) || (p !== null && p.textContent === '1')"))


        def rollback_audit():  # the request's audit row lands right after its publish: poll for it
            with rs.store.session() as repo:
                return [(e.user, e.detail) for e in repo.audit_log() if e.action == "rollback"]

        audit = wait_until(rollback_audit)
        assert len(audit) == 1 and audit[0][0] == "ed" and "revoked [2]" in audit[0][1]
        with rs.store.session() as repo:
            assert {r.version: r.state for r in repo.releases()} == {1: "pinned", 2: "revoked"}
        # retained: a device connecting later receives it
        late = Subscriber(rs.broker_url, "late-device", [topics.pin()])
        assert verify_pin(late.got.get(timeout=10)[1], release_key.public_key()).version == 1
        late.close()
        driver.get(rs.url + "/models")
        assert driver.find_element(By.CSS_SELECTOR, "#pins td.pinned").text == "1"
        assert not driver.find_elements(By.CSS_SELECTOR, "#releases button.rollback")  # nothing newer to revoke
        # a forged pin on the bus is refused and counted, the pin in force stays
        forged = sign_pin(Pin(rs.fleet, 2, (1,), int(time.time() * 1000) + 10_000), Ed25519PrivateKey.generate())
        bus.publish(topics.pin(), forged)
        wait_until(lambda: ed.get_json("/api/counters").get("rejected.pin_bad_signature") == 1)
        assert ed.get_json("/api/releases")["pins"][0]["version"] == 1
    finally:
        bus.close()


def test_clinician_relabels_the_beats_of_an_alert(keyed_server, driver):
    rs, _, labels_key = keyed_server
    topics = FleetTopics(rs.fleet)
    bus = Subscriber(rs.broker_url, "label-watcher", [topics.label("ecg5"), topics.label("other")])
    try:
        strip = {"fs_hz": 360, "gain": 200, "start": 5000, "samples": [0, 40, 200, 40, 0] * 60,
                 "beats": [[2, "N"], [102, "V"], [202, "N"]]}
        alert = {"alert_id": "ecg5-b1-1", "device": "ecg5", "patient": XSS, "kind": "ventricular_run",
                 "time": "2026-11-26T09:00:00Z", "beat_index": 5102, "beats": 1, "class": "V",
                 "confidence_permille": 900, "heart_rate_bpm": 80, "model_version": "3", "schema": 1, "strip": strip}
        bus.publish(topics.alert("ecg5"), encode_alert(rs.fleet, 5, alert), retain=False)
        clara, ed = DashboardClient(rs.host, rs.port), DashboardClient(rs.host, rs.port)
        assert clara.login("clara", PASSWORD) and ed.login("ed", PASSWORD)
        wait_until(lambda: clara.get_json("/api/alerts")["alerts"])
        path = "/api/alerts/ecg5-b1-1/labels"
        assert _post(DashboardClient(rs.host, rs.port), path, {"beats": [5002], "labels": ["N"]})[0] == 401
        assert _post(ed, path, {"beats": [5002], "labels": ["N"]})[0] == 403
        assert _post(clara, path, {"beats": [2], "labels": ["N"]})[0] == 422  # a strip offset, not a device index
        assert _post(clara, path, {"beats": [5002], "labels": ["X"]})[0] == 422
        assert _post(clara, "/api/alerts/nope/labels", {"beats": [5002], "labels": ["N"]})[0] == 404
        assert bus.got.empty()
        # the clinician corrects the V beat to S on the alerts page and sends
        _login(driver, rs, "clara")
        selects = wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#alerts select.beat-label"))
        assert [s.get_attribute("data-beat") for s in selects] == ["5002", "5102", "5202"]
        assert [Select(s).first_selected_option.text for s in selects] == ["N", "V", "N"]
        Select(selects[1]).select_by_value("S")
        driver.find_element(By.CSS_SELECTOR, "#alerts button.send-labels").click()
        topic, data, _ = bus.got.get(timeout=20)
        assert topic == topics.label("ecg5")  # that device only
        doc = verify_labels(data, labels_key.public_key(), rs.fleet, "ecg5")
        assert (doc.alert_id, doc.beats, doc.labels) == ("ecg5-b1-1", (5002, 5102, 5202), ("N", "S", "N"))
        wait_until(lambda: "1 corrected" in driver.find_element(By.CSS_SELECTOR, ".label-result").text)
        assert bus.got.empty()
        with rs.store.session() as repo:
            audit = [e for e in repo.audit_log() if e.action == "labels"]
            assert len(audit) == 1 and audit[0].user == "clara" and audit[0].target == "alert ecg5-b1-1"
        # the hostile patient name stayed text
        assert XSS in driver.find_element(By.ID, "alerts").text
        assert driver.execute_script("return window.__xss === undefined")
        assert not driver.find_elements(By.CSS_SELECTOR, "main img")
    finally:
        bus.close()


def test_without_keys_the_pages_name_the_commands(running_server, driver):
    rs = running_server
    ed = DashboardClient(rs.host, rs.port)
    assert ed.login("ed", PASSWORD)
    assert _post(ed, "/api/releases/rollback", {"version": 1})[0] == 409
    clara = DashboardClient(rs.host, rs.port)
    assert clara.login("clara", PASSWORD)
    assert _post(clara, "/api/alerts/x/labels", {"beats": [1], "labels": ["N"]})[0] == 409
    _login(driver, rs, "ed")
    driver.get(rs.url + "/models")
    assert "pulsewire release rollback" in driver.find_element(By.ID, "rollback-hint").text
    assert not driver.find_elements(By.CSS_SELECTOR, "button.rollback")
