"""Which devices' wearers have withdrawn training consent, as the aggregator hears it on the bus.

The fleet server publishes every patient's consent record retained on ``pw/{fleet}/consent/{patient}``
(``broker.consent``) and a device names its wearer's pseudonym in its retained status. The aggregator reads
both (the generated ACL lets it) on a connection of its own, so the records are known before the first
round opens, and the round engine never selects a device whose patient said no. A device also declines a
round itself without consent; this is the server side of the same rule, so a device with a stale or missing
record is not asked at all. With the fleet's consent public key only signed records count.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

from broker.consent import decode_consent
from broker.device_messages import decode_status
from broker.mqtt_link import BrokerSettings, Message, MqttLink
from broker.topics import NAME_PATTERN, FleetTopics, parse_topic
from broker.wire import WireError

log = logging.getLogger(__name__)


class ConsentWatch:
    def __init__(self, fleet: str, broker: "str | BrokerSettings", public_key: Any = None) -> None:
        self.topics, self.public_key = FleetTopics(fleet), public_key
        self._patient_of: dict[str, str] = {}
        self._consent: dict[str, tuple[int, bool]] = {}  # patient -> (record version, training allowed)
        self._lock = threading.Lock()
        self._last_message = time.monotonic()
        self.rejected: Counter[str] = Counter()
        self.link = MqttLink(broker, f"pw-{fleet}-aggregator-consent",
                             [self.topics.all_consents(), self.topics.all_statuses()], self._on_message,
                             clean_session=True)

    def start(self, settle_s: float = 0.3, max_wait_s: float = 2.0) -> None:
        """Connect and wait until the retained records and statuses have arrived (quiet for ``settle_s``)."""
        self.link.start()
        end = time.monotonic() + max_wait_s
        self._last_message = time.monotonic()
        while time.monotonic() < end and time.monotonic() - self._last_message < settle_s:
            time.sleep(0.05)

    def stop(self) -> None:
        self.link.stop()

    def withdrawn(self) -> frozenset[str]:
        """Devices whose patient's latest record refuses training."""
        with self._lock:
            return frozenset(d for d, p in self._patient_of.items() if p in self._consent and not self._consent[p][1])

    def _on_message(self, message: Message) -> None:
        self._last_message = time.monotonic()
        try:
            topic = parse_topic(message.topic)
            if topic.kind == "consent":
                self._note_consent(topic.name, message.payload)
            elif topic.kind == "status" and message.payload:
                _, status = decode_status(message.payload)
                patient = status.get("patient")
                if isinstance(patient, str) and NAME_PATTERN.match(patient):
                    with self._lock:
                        self._patient_of[topic.device] = patient
        except (ValueError, WireError) as exc:
            self.rejected[getattr(exc, "reason", "bad_topic")] += 1
            log.warning("consent watch: ignoring %s: %s", message.topic, exc)

    def _note_consent(self, patient: str, payload: bytes) -> None:
        if not payload:  # the record was cleared: no consent is the default
            with self._lock:
                self._consent[patient] = (0, False)
            return
        consent = decode_consent(payload, self.public_key)
        if consent.patient != patient or consent.fleet != self.topics.fleet:
            raise WireError("wrong_patient", f"record of {consent.fleet}/{consent.patient} on {patient}'s topic")
        with self._lock:
            if consent.version >= self._consent.get(patient, (0, False))[0]:
                self._consent[patient] = (consent.version, consent.training)
