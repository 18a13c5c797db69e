"""Alerts over MQTT without losing any: beats -> AlertBuilder -> SQLite spool -> QoS 1, in order.

A sender thread publishes the oldest spooled alert, waits for the broker's acknowledgement, and only
then deletes it; while the broker is unreachable alerts wait in the spool, and a restarted device
sends what its predecessor left. A heartbeat keeps the retained status (with a last will) current.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from broker.device_messages import encode_alert, encode_status
from broker.mqtt_link import BrokerSettings, MqttLink, Will
from broker.topics import FleetTopics
from edge_runtime.alert_spool import AlertSpool
from edge_runtime.alerts import AlertBuilder, AlertPolicy
from edge_runtime.runtime import BeatResult

if TYPE_CHECKING:
    from edge_runtime.consent_gate import ConsentGate
    from edge_runtime.event_strip import StripRecorder

log = logging.getLogger(__name__)


class AlertPublisher:
    """A ``BeatSink``: give it to ``EdgeRuntime``; call ``start`` before and it is closed with the runtime."""

    def __init__(self, device: str, device_id: int, fleet: str, broker_url: BrokerSettings | str, spool_path: Path, patient: str,
                 policy: AlertPolicy = AlertPolicy(), status_every_s: float = 10.0, drain_timeout_s: float = 10.0,
                 builder: AlertBuilder | None = None, strips: "StripRecorder | None" = None,
                 consent: "ConsentGate | None" = None) -> None:
        """``strips``: the fleet policy allows event strips (None: never); they go out only while ``consent``
        says the patient agreed."""
        self.device, self.device_id = device, device_id
        self.topics = FleetTopics(fleet)
        self.spool = AlertSpool(spool_path)
        self.builder = builder or AlertBuilder(device, patient, policy)
        self.status_every_s, self.drain_timeout_s = status_every_s, drain_timeout_s
        self.strips, self.consent = strips, consent
        self.link = MqttLink(broker_url, f"pw-{fleet}-{device}-edge", [], lambda _m: None,
                             on_connect=lambda _s: self._wake.set(),
                             will=Will(self.topics.status(device), encode_status(fleet, device_id, {"state": "offline"})))
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._created: dict[str, float] = {}
        self.latencies_ms: list[float] = []
        self.sent = 0
        self.beats = 0
        self._inference_ms: deque[float] = deque(maxlen=1000)
        #: Extra status fields from other components, e.g. the last model-update verdict.
        self.extra_status: dict = {}
        self._started = time.monotonic()
        self._threads = [threading.Thread(target=self._send_loop, name=f"alerts-{device}", daemon=True),
                         threading.Thread(target=self._status_loop, name=f"status-{device}", daemon=True)]

    def start(self) -> None:
        self.link.start(wait=False)  # alerts spool while the broker is unreachable
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ BeatSink
    def on_beat(self, beat: BeatResult) -> None:
        self.beats += 1
        self._inference_ms.append(beat.inference_ms)
        for alert in self.builder.on_beat(beat):
            self._spool(alert)

    def close(self) -> None:
        for alert in self.builder.flush():
            self._spool(alert)
        deadline = time.monotonic() + self.drain_timeout_s
        while self.spool.depth() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.spool.depth():
            log.warning("%s: %d alert(s) still spooled at shutdown; they are sent on the next start",
                        self.device, self.spool.depth())
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=5)
        final = self._publish_status("offline")
        if final is not None and self.link.connected.is_set():
            try:  # the last counters are what the fleet sees while the device is off: let them reach the broker
                final.wait_for_publish(timeout=self.drain_timeout_s)  # 2 s lost it once on a loaded machine
            except (RuntimeError, ValueError):
                pass
        self.link.stop()
        self.spool.close()

    def submit(self, alert: dict) -> None:
        """Send an alert made elsewhere (``AlertBuilder.event``: AF onset/offset) through the same spool."""
        self._spool(alert)

    def _spool(self, alert: dict) -> None:
        if alert["kind"] != "summary" and self.strips is not None and self.consent is not None \
                and self.consent.allows_strip():
            strip = self.strips.strip(alert["beat_index"])
            if strip is not None:
                alert = {**alert, "strip": strip}
        payload = encode_alert(self.topics.fleet, self.device_id, alert)
        self.spool.put(alert["alert_id"], self.topics.alert(self.device), payload)
        self._created[alert["alert_id"]] = time.perf_counter()
        self._wake.set()

    # ------------------------------------------------------------------ threads
    def _send_loop(self) -> None:
        while not self._stop.is_set():
            rows = self.spool.oldest(1)
            if not rows or not self.link.connected.is_set():
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            seq, alert_id, topic, payload = rows[0]
            info = self.link.publish(topic, payload, qos=1)
            try:
                info.wait_for_publish(timeout=5)
            except (RuntimeError, ValueError):
                pass  # disconnected meanwhile: the same alert goes again after the reconnect
            if info.is_published():
                self.spool.remove(seq)
                self.sent += 1
                created = self._created.pop(alert_id, None)
                if created is not None:
                    self.latencies_ms.append(1000 * (time.perf_counter() - created))

    def _status_loop(self) -> None:
        while not self._stop.wait(self.status_every_s if self.link.connected.is_set() else 0.5):
            if self.link.connected.is_set():
                self._publish_status("online")

    def status(self, state: str) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else None
        return {"state": state, "component": "edge", "beats": self.beats, "patient": self.builder.patient,
                "beats_per_s": round(self.beats / max(time.monotonic() - self._started, 1e-9), 2),
                "alerts_sent": self.sent, "spool_depth": self.spool.depth(),
                "inference_ms_p50": round(float(np.median(self._inference_ms)), 3) if self._inference_ms else None,
                "alert_latency_ms_p50": None if lat is None else round(float(np.percentile(lat, 50)), 2),
                **self.extra_status}

    def _publish_status(self, state: str):
        try:
            payload = encode_status(self.topics.fleet, self.device_id, self.status(state))
            return self.link.publish(self.topics.status(self.device), payload, qos=1, retain=True)
        except Exception:  # a status must never take the alert path down
            log.exception("%s: status not published", self.device)
            return None
