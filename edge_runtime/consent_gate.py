"""What the wearer allowed, as the device last heard it: the retained consent record of its patient.

The alert publisher asks it before attaching an ECG strip, the federated device client before training.
The gate subscribes to ``pw/{fleet}/consent/{patient}``; until a valid record arrives nothing is
shared (no strip). With the fleet's public key only signed records count; a bad or forged record is
logged, counted and ignored, and the last good one stays in force.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter

from broker.consent import Consent, decode_consent
from broker.mqtt_link import Message, MqttLink
from broker.topics import FleetTopics
from broker.wire import WireError

log = logging.getLogger(__name__)


class ConsentGate:
    def __init__(self, fleet: str, device: str, patient: str, broker_url: str, public_key=None) -> None:
        self.patient, self.public_key = patient, public_key
        self.topic = FleetTopics(fleet).consent(patient)
        self.consent: Consent | None = None
        self.rejected: Counter[str] = Counter()
        #: Set once the broker delivered a record (the retained one arrives right after subscribing).
        self.heard = threading.Event()
        self.link = MqttLink(broker_url, f"pw-{fleet}-{device}-consent", [self.topic], self._on_message)

    def start(self) -> None:
        self.link.start(wait=False)

    def stop(self) -> None:
        self.link.stop()

    def allows_strip(self) -> bool:
        return self.consent is not None and self.consent.strip

    def allows_training(self) -> bool:
        return self.consent is not None and self.consent.training

    def _on_message(self, message: Message) -> None:
        if not message.payload:
            self.consent = None  # the record was withdrawn
            return
        try:
            consent = decode_consent(message.payload, self.public_key)
        except WireError as exc:
            self.rejected[exc.reason] += 1
            log.warning("consent for %s rejected (%s): %s", self.patient, exc.reason, exc)
            return
        if consent.patient != self.patient:
            self.rejected["wrong_patient"] += 1
            return
        if self.consent is None or consent.version >= self.consent.version:
            self.consent = consent
        self.heard.set()
