"""Listens for signed model releases on ``pw/{fleet}/release`` and hands verified models to the runtime."""
from __future__ import annotations

import logging
from typing import Callable

from broker.mqtt_link import Message, MqttLink
from broker.topics import FleetTopics
from edge_runtime.classifier import BeatClassifier
from edge_runtime.model_store import ModelStore, Verdict

log = logging.getLogger(__name__)


class ReleaseListener:
    def __init__(self, store: ModelStore, broker_url: str, fleet: str, device: str,
                 on_installed: Callable[[BeatClassifier], None]) -> None:
        self.store = store
        self.on_installed = on_installed
        self.verdicts: list[Verdict] = []
        #: Called with every verdict (e.g. to put it in the device's status message).
        self.on_verdict: Callable[[Verdict], None] | None = None
        topic = FleetTopics(fleet).release()
        self.link = MqttLink(broker_url, f"pw-{fleet}-{device}-models", [topic], self._on_message)

    def start(self) -> None:
        self.link.start(wait=False)

    def stop(self) -> None:
        self.link.stop()

    def _on_message(self, msg: Message) -> None:
        if not msg.payload:
            return
        verdict = self.store.consider(msg.payload)
        self.verdicts.append(verdict)
        if self.on_verdict:
            self.on_verdict(verdict)
        if verdict.accepted:
            self.on_installed(self.store.load_current())
