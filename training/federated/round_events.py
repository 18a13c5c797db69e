"""The aggregator's round events on the bus, for the fleet server: opened, closed (with metrics and the
privacy ledger entry), and every rejected message with its reason.

A small observer the aggregator calls at three places; it publishes ``broker.round_events`` messages
(QoS 1, not retained) over the aggregator's own MQTT link, so the server needs nothing but the bus.
Publishing never raises into the aggregator: a lost event costs a dashboard row, not a round.
"""
from __future__ import annotations

import logging
from typing import Any

from broker.mqtt_link import MqttLink
from broker.round_events import encode_round_event
from broker.topics import FleetTopics, parse_topic

log = logging.getLogger(__name__)


class RoundEventPublisher:
    def __init__(self, fleet: str) -> None:
        self.topics = FleetTopics(fleet)
        self.fleet = fleet

    def _publish(self, link: MqttLink, round_: int, event: str, fields: dict[str, Any]) -> None:
        try:
            link.publish(self.topics.round_event(round_, event), encode_round_event(self.fleet, round_, event, fields),
                         qos=1)
        except Exception:
            log.exception("round %d: %s event not published", round_, event)

    def opened(self, link: MqttLink, round_: int, strategy: str, selected: list[str], rounds: int) -> None:
        self._publish(link, round_, "opened", {"strategy": strategy, "selected": list(selected), "rounds": rounds})

    def closed(self, link: MqttLink, row: dict[str, Any], strategy: str, accepted: list[str],
               budget: float | None) -> None:
        """``row`` is the aggregator's history row of the round."""
        skip = {"round", "epoch", "selected", "participants", "declined", "late_accepted", "loss", "bytes_received",
                "model_bytes", "bytes_down", "quorum_met", "rejected", "seconds", "privacy"}
        metrics = {k: v for k, v in row.items() if k not in skip and isinstance(v, (int, float))}
        self._publish(link, row["round"], "closed", {
            "strategy": strategy, "participants": row["participants"], "declined": row["declined"],
            "selected_count": row["selected"], "bytes_received": row["bytes_received"], "bytes_down": row["bytes_down"],
            "seconds": row["seconds"], "loss": row.get("loss"), "metrics": metrics, "rejected": row["rejected"],
            "privacy": row.get("privacy"), "accepted": sorted(accepted), "budget": budget})

    def rejected(self, link: MqttLink, round_: int, topic: str, reason: str, detail: str) -> None:
        try:
            device = parse_topic(topic).device
        except ValueError:
            device = None
        self._publish(link, round_, "rejected", {"reason": reason, "device": device, "detail": detail[:200]})
