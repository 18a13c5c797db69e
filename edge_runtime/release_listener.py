"""Listens for signed model releases on ``pw/{fleet}/release`` and rollback pins on ``pw/{fleet}/pin``, and
hands the model to run to the runtime (which swaps it between two beats)."""
from __future__ import annotations

import logging
from typing import Callable

from broker.mqtt_link import BrokerSettings, Message, MqttLink
from broker.topics import FleetTopics, parse_topic
from edge_runtime.classifier import BeatClassifier
from edge_runtime.model_store import ModelStore, Verdict

log = logging.getLogger(__name__)


class ReleaseListener:
    def __init__(self, store: ModelStore, broker_url: BrokerSettings | str, fleet: str, device: str,
                 on_installed: Callable[[BeatClassifier], None]) -> None:
        self.store = store
        self.on_installed = on_installed
        self.verdicts: list[Verdict] = []
        #: Called with every verdict (e.g. to put it in the device's status message).
        self.on_verdict: Callable[[Verdict], None] | None = None
        topics = FleetTopics(fleet)
        self.link = MqttLink(broker_url, f"pw-{fleet}-{device}-models", [topics.release(), topics.pin()],
                             self._on_message)

    def start(self) -> None:
        self.link.start(wait=False)

    def stop(self) -> None:
        self.link.stop()

    def _on_message(self, msg: Message) -> None:
        if not msg.payload:
            return
        try:
            kind = parse_topic(msg.topic).kind
        except ValueError:
            log.warning("ignoring a message on %s", msg.topic)
            return
        before = self.store.current_version()
        verdict = self.store.apply_pin(msg.payload) if kind == "pin" else self.store.consider(msg.payload)
        self.verdicts.append(verdict)
        if self.on_verdict:
            self.on_verdict(verdict)
        if verdict.accepted and self.store.current_version() != before:
            try:
                self.on_installed(self.store.load_current())
            except Exception:  # the network thread must survive a model the runtime cannot take
                log.exception("the installed model version %s could not be put in service", self.store.current_version())
