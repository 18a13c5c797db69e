"""A test subscriber that waits for messages, and is ready only once the broker made its subscriptions."""
from __future__ import annotations

import threading

from broker.mqtt_link import MqttLink


class Inbox:
    """A subscriber that waits until it holds ``n`` messages. The constructor returns once the broker has
    made the subscriptions (a durable session's quorum queue on RabbitMQ takes a moment): it subscribes
    last to a private topic and publishes there until its own message comes back."""

    def __init__(self, url: str, client_id: str, topics: list[str]) -> None:
        self.messages: list = []
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._ready_topic = f"pwtest/ready/{client_id}"
        self.link = MqttLink(url, client_id, topics + [self._ready_topic], self._on)
        self.link.start()
        for _ in range(60):
            self.link.publish(self._ready_topic, b"", qos=0)
            if self._ready.wait(0.5):
                return
        raise AssertionError(f"{client_id}: subscriptions not active on {url}")

    def _on(self, m) -> None:
        if m.topic == self._ready_topic:
            self._ready.set()
            return
        with self._cond:
            self.messages.append(m)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout_s: float = 15.0) -> list:
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= n, timeout_s)
            return list(self.messages)

    def close(self) -> None:
        self.link.stop()
