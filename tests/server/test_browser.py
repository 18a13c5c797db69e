"""The dashboard in a real headless Chromium: log in, a live alert with its ECG strip (real MIT-BIH signal),
acknowledging it,
hostile strings shown as text, a device going offline by its last will, a round's metrics when it closes.

Screenshots are written to the test's tmp folder (their paths are printed: ``pytest -s`` shows them).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import paho.mqtt.client as mqtt
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from broker.device_messages import encode_alert
from broker.topics import FleetTopics
from edge_runtime.alert_publisher import AlertPublisher
from edge_runtime.alerts import AlertPolicy
from edge_runtime.consent_gate import ConsentGate
from edge_runtime.event_strip import StripRecorder
from edge_runtime.runtime import BeatResult
from tests.conftest import ROOT
from tests.server.conftest import PASSWORD, wait_until
from tools.server_bench import DashboardClient

pytestmark = pytest.mark.integration

XSS = "<img src=x onerror=\"window.__xss=1\">"
SQLI = "x'); DROP TABLE alerts; --"
DEVICE_SCRIPT = """
import sys, time
from broker.device_messages import encode_status
from broker.mqtt_link import MqttLink, Will
from broker.topics import FleetTopics
url, fleet = sys.argv[1], sys.argv[2]
t = FleetTopics(fleet)
link = MqttLink(url, "pw-" + fleet + "-wear9", [], lambda m: None, keepalive_s=5,
                will=Will(t.status("wear9"), encode_status(fleet, 9, {"state": "offline"})))
link.start()
link.publish(t.status("wear9"), encode_status(fleet, 9, {"state": "online", "battery": 64, "link": "<b>ble</b>",
             "capabilities": ["infer"]}), qos=1, retain=True).wait_for_publish(10)
print("online", flush=True)
time.sleep(600)
"""


def _replay_excerpt(strips: StripRecorder, publisher: AlertPublisher, seconds: float) -> None:
    """Real ECG: the MIT-BIH record 208 excerpt (lead MLII) streamed through the strip recorder, its beats with
    the cardiologists' labels (AAMI classes) standing in for the classifier; 208 has ventricular couplets."""
    import wfdb

    from edge_runtime.aami import aami_class
    from edge_runtime.sources import WfdbReplay

    record = str(ROOT / "tests" / "fixtures" / "mitdb_excerpt" / "208x")
    ann = wfdb.rdann(record, "atr")
    beats = [(int(s), aami_class(sym)) for s, sym in zip(ann.sample, ann.symbol) if aami_class(sym)]
    end = 0
    for chunk in strips.tap(WfdbReplay(record, "MLII", chunk_s=0.25).chunks()):
        end += len(chunk)
        while beats and beats[0][0] < end - 90:  # a beat is known a moment after its R peak
            sample, label = beats.pop(0)
            beat = BeatResult(sample, sample / 360, label, 0.95, 75.0, "m1")
            strips.on_beat(beat)
            publisher.on_beat(beat)
        if end >= seconds * 360:
            return


def _login(driver, rs, name: str) -> None:
    driver.get(rs.url + "/login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "submit").click()
    wait_until(lambda: "/login" not in driver.current_url)


def _shot(driver, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def _card(driver, alert_id: str):
    return driver.execute_script("return [...document.querySelectorAll('#alerts article, #summaries article')]"
                                 ".find((a) => a.dataset.alertId === arguments[0]) || null", alert_id)


def _card_text(driver, alert_id: str) -> str:
    """The card's text; it is replaced when its state changes, so look it up afresh each time."""
    try:
        card = _card(driver, alert_id)
        return card.text if card is not None else ""
    except StaleElementReferenceException:
        return ""


def test_dashboard_end_to_end_in_chromium(running_server, chromium, tmp_path):
    rs, driver, topics = running_server, chromium, FleetTopics(running_server.fleet)
    # --- a clinician logs in and watches the alerts page
    _login(driver, rs, "clara")
    assert driver.current_url.endswith("/alerts")
    wait_until(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-sse") == "open")
    clara = DashboardClient(rs.host, rs.port)
    assert clara.login("clara", PASSWORD)
    resp, _ = clara.request("PUT", "/api/consents/pt-br", json.dumps({"training": True, "strip": True}).encode(),
                            {"Content-Type": "application/json"})
    assert resp.status == 200
    # --- the real edge alert path: consent gate, strip recorder, spool, QoS 1
    gate = ConsentGate(rs.fleet, "ecg7", "pt-br", rs.broker_url)
    gate.start()
    strips = StripRecorder(360.0)
    publisher = AlertPublisher("ecg7", 7, rs.fleet, rs.broker_url, tmp_path / "spool.sqlite", "pt-br",
                               policy=AlertPolicy(run_length=2), strips=strips, consent=gate)
    publisher.start()
    wait_until(gate.allows_strip)
    _replay_excerpt(strips, publisher, seconds=8.0)
    alert_id = f"ecg7-{publisher.builder.boot_id}-1"
    wait_until(lambda: _card(driver, alert_id))  # pushed live: the page was not reloaded
    # cards are re-rendered as alerts arrive: read the drawn strip's labels in one go, not through a held element
    labels = wait_until(lambda: driver.execute_script(
        "const a = [...document.querySelectorAll('#alerts article, #summaries article')]"
        ".find((x) => x.dataset.alertId === arguments[0]);"
        "return a && a.querySelector('.strip .main-svg') ? "
        "[...a.querySelectorAll('.strip .annotation-text')].map((t) => t.textContent) : null", alert_id))
    assert labels.count("V") >= 2 and "N" in labels  # the couplet and the beats around it, labelled
    text = _card_text(driver, alert_id)
    assert "pt-br" in text and "ventricular_run" in text
    _shot(driver, tmp_path, "alerts")
    # --- acknowledging it is stored and audited
    _card(driver, alert_id).find_element(By.CSS_SELECTOR, ".btn-acknowledge").click()
    wait_until(lambda: "acknowledged by clara" in _card_text(driver, alert_id))
    with rs.store.session() as repo:
        assert repo.alert(alert_id).acknowledged_by == "clara"
        assert any(e.user == "clara" and e.action == "acknowledged" and e.target == f"alert {alert_id}"
                   for e in repo.audit_log())
    publisher.close()
    gate.stop()
    # --- hostile strings from a device: stored verbatim, shown as text, no script runs
    host, port = rs.broker_url.removeprefix("mqtt://").split(":")
    evil = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="evil-device")
    evil.connect(host, int(port))
    evil.loop_start()
    hostile = {"alert_id": "<svg onload=window.__xss=2>", "device": "evil1", "patient": XSS, "kind": "summary",
               "time": SQLI, "beat_index": 1, "beats": 5, "class": "N", "confidence_permille": 1,
               "heart_rate_bpm": 60, "model_version": "<script>window.__xss=3</script>", "schema": 1, "counts": {}}
    evil.publish(topics.alert("evil1"), encode_alert(rs.fleet, 66, hostile), qos=1).wait_for_publish(10)
    evil_card = wait_until(lambda: _card(driver, hostile["alert_id"]))
    assert XSS in evil_card.text and SQLI in evil_card.text
    assert driver.execute_script("return window.__xss === undefined")
    assert not driver.find_elements(By.CSS_SELECTOR, "main img, main script, main article > svg")
    driver.refresh()  # the server-rendered page escapes them too
    evil_card = wait_until(lambda: _card(driver, hostile["alert_id"]))
    assert XSS in evil_card.text and driver.execute_script("return window.__xss === undefined")
    with rs.store.session() as repo:
        # stored verbatim; the table the SQL string "dropped" holds the run, the summary sent at close and this one
        assert repo.alert(hostile["alert_id"]).patient == XSS and repo.alert(hostile["alert_id"]).time == SQLI
        assert repo.alert_count() == len(repo.alerts()) >= 3  # the table is still there
    evil.loop_stop()
    # --- an engineer sees a device go offline by its last will
    driver.find_element(By.CSS_SELECTOR, "form.who button").click()
    _login(driver, rs, "ed")
    assert driver.current_url.endswith("/fleet")
    proc = subprocess.Popen([sys.executable, "-c", DEVICE_SCRIPT, rs.broker_url, rs.fleet], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "online"
        row_state = lambda: driver.execute_script(  # the table is rebuilt on every update: read it in one go
            "return [...document.querySelectorAll('#fleet tbody tr')].filter((r) => r.dataset.device === 'wear9')"
            ".map((r) => r.querySelector('td.state').textContent)")
        assert wait_until(lambda: row_state() == ["online"])
        assert "<b>ble</b>" in driver.execute_script("return document.getElementById('fleet').innerText")
        assert not driver.find_elements(By.CSS_SELECTOR, "#fleet b")  # shown as text, not as markup
        os.kill(proc.pid, signal.SIGKILL)  # no goodbye: the broker publishes the last will
        wait_until(lambda: row_state() == ["offline"], 30)
    finally:
        proc.kill()
        proc.wait()
    _shot(driver, tmp_path, "fleet")
    # --- a round's metrics appear on the rounds page when it closes
    from training.federated.round_events import RoundEventPublisher

    driver.get(rs.url + "/rounds")
    wait_until(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-sse") == "open")
    agg = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="agg-browser")
    agg.connect(host, int(port))
    agg.loop_start()

    class _Link:
        def publish(self, topic, payload, qos=1, retain=False):
            return agg.publish(topic, payload, qos=qos, retain=retain)

    obs = RoundEventPublisher(rs.fleet)
    for r, f1 in ((1, 0.4321), (2, 0.6173)):
        obs.opened(_Link(), r, "fedavg", ["dev-a", "dev-b", "dev-c"], 2)
        obs.closed(_Link(), {"round": r, "selected": 3, "participants": 3, "declined": 0, "bytes_received": 30000 * r,
                             "bytes_down": 60000, "seconds": 1.0, "rejected": {}, "val_macro_f1": f1},
                   "fedavg", ["dev-a", "dev-b", "dev-c"], None)
    # the table is rebuilt on every event: read its text in one go (an element found first can go stale)
    wait_until(lambda: "0.6173" in driver.execute_script("return document.getElementById('rounds').innerText"), 30)
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#chart-metrics .main-svg"))
    agg.loop_stop()
    _shot(driver, tmp_path, "rounds")
