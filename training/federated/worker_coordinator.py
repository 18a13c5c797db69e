"""The coordinator's side of aggregator workers: a round mode of the aggregator service that receives no update.

The coordinator selects and announces as the single aggregator does; the devices' updates go to the
``AggregatorWorker``s (``training.federated.aggregator_workers``) through the broker's shared subscription,
and the coordinator talks to the workers on ``pw/FLEET/agg/...`` (``broker.aggregation_topics``) through a
link of its own. ``WorkerCoordinator`` is what both ways of combining have in common (the link, waiting for
every worker's ``ready``, sending the round's sum-rule arguments, asking every worker for an answer until all
answered); what a round's close combines is the subclass's:

- ``SharedWorkers``: the workers' fixed-point partial sums, added (strategies with a sum rule,
  ``training.federated.partial_sums``);
- ``ForwardingWorkers`` (``training.federated.forwarded_updates``): the individual updates the workers
  screened and forwarded, on which the strategy runs as on one aggregator (median, trimmed mean, Krum,
  norm bounding to the median norm).
"""
from __future__ import annotations

import json
import logging
import queue
import time
from typing import Any

from broker.aggregation_topics import UPWARD, agg_topic
from broker.mqtt_link import Message, MqttLink
from training.federated.aggregator import Aggregator, PlainUpdates
from training.federated.partial_sums import PartialSum, model_size, outliers
from training.federated.round_engine import Rejected
from training.federated.strategies import ClientUpdate

log = logging.getLogger(__name__)


class WorkerCoordinator(PlainUpdates):
    """The coordinator's round mode for ``workers`` AggregatorWorkers (a subclass says how a round closes)."""

    def __init__(self, workers: int, answer_timeout_s: float = 30.0) -> None:
        if workers < 1 or answer_timeout_s <= 0:
            raise ValueError("workers must be >= 1 and answer_timeout_s > 0")
        self.workers, self.answer_timeout_s = workers, answer_timeout_s
        self._queue: queue.Queue[Message] = queue.Queue()
        self._answers: dict[tuple[str, int, int], bytes] = {}
        self._link: MqttLink | None = None
        self._ready: set[int] = set()
        self.per_worker: dict[int, int] = {}

    def _ensure_link(self, service: Aggregator) -> None:
        if self._link is None:
            fleet = service.cfg.fleet
            self._link = MqttLink(service.link.settings, f"pw-{fleet}-aggcoord",
                                  [agg_topic(fleet, up) for up in UPWARD], self._queue.put,
                                  clean_session=True)
            self._link.start()

    def plan_extras(self, service: Aggregator) -> dict[str, Any]:
        """Before a round is announced: every worker has joined the shared subscription and, when the strategy's
        sum rule changes between rounds (DP-FedAvg's adaptive clip), has the round's arguments."""
        self._ensure_link(service)
        waited = time.monotonic()
        while len(self._ready) < self.workers:
            self.wait(service, 0.1)
            if time.monotonic() - waited > self.answer_timeout_s:
                log.warning("waiting for aggregator worker(s) %s to start",
                            sorted(set(range(self.workers)) - self._ready))
                waited = time.monotonic()
        if args := service.strategy.sum_args():
            self._collect(service, "ruled", "rule", json.dumps(args).encode())
        return {}

    def stop(self) -> None:
        """Close the coordinator's link to the workers (after the service's run)."""
        if self._link is not None:
            self._link.stop()
            self._link = None

    def screen_update(self, service: Aggregator, topic, payload: bytes) -> None:
        raise Rejected("wrong_receiver", "updates go to the aggregator workers' shared subscription")

    def wait(self, service: Aggregator, timeout: float) -> None:
        service.serve_one(min(timeout, 0.05))
        self._drain(service)

    def _drain(self, service: Aggregator) -> None:
        while True:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                return
            parts = message.topic.split("/")
            if parts[3] == "ready":
                self._ready.add(int(parts[4]))
            elif parts[3] in ("progress", "forward"):
                self.note(service, parts[3], int(parts[4]), message.payload)
            else:
                self._answers[(parts[3], int(parts[4]), int(parts[5]))] = message.payload

    def note(self, service: Aggregator, kind: str, worker: int, payload: bytes) -> None:
        """What a worker reports during the round (``progress``: devices summed; ``forward``: updates)."""

    def _collect(self, service: Aggregator, kind: str, ask: str, payload: bytes) -> dict[int, bytes]:
        """Publish a request for the current round and wait for every worker's answer (asking again after each
        timeout)."""
        round_ = service.round
        while True:
            self._link.publish(agg_topic(service.cfg.fleet, ask, round_), payload, qos=1)
            deadline = time.monotonic() + self.answer_timeout_s
            while time.monotonic() < deadline:
                got = {w: self._answers.get((kind, round_, w)) for w in range(self.workers)}
                if all(v is not None for v in got.values()):
                    return got
                self.wait(service, 0.05)
            missing = [w for w in range(self.workers) if (kind, round_, w) not in self._answers]
            log.warning("round %d: worker(s) %s have not sent their %s answer; asking again", round_, missing, kind)


class SharedWorkers(WorkerCoordinator):
    """Partial sums: the workers sum their share of the updates; a round's close adds the sums."""

    def note(self, service: Aggregator, kind: str, worker: int, payload: bytes) -> None:
        engine = service.engine
        try:
            note = json.loads(payload) if kind == "progress" else {}
        except ValueError as exc:  # a worker of another mode or version: its sums still count at the close
            log.warning("round %d: worker %d's %s note ignored (%s)", engine.round, worker, kind, exc)
            return
        if note.get("round") == engine.round:
            for device in note["devices"]:
                if device in engine.selected and device not in engine.accepted:  # a Selection: O(1)
                    engine.accepted[device] = ClientUpdate(device, [], 1, 1)

    def _gather(self, service: Aggregator, kind: str, ask: str, payload: bytes) -> dict[int, PartialSum]:
        """Every worker's partial sum of the kind asked for."""
        size = model_size(service.weights)
        return {w: PartialSum.from_bytes(v, size) for w, v in self._collect(service, kind, ask, payload).items()}

    def close(self, service: Aggregator) -> tuple[list[ClientUpdate] | None, dict[str, Any]]:
        self._ensure_link(service)
        self._drain(service)
        rule = service.round_sum.rule  # the round's (DP-FedAvg: with the round's clip)
        partials = self._gather(service, "partial", "close", json.dumps({"round": service.round}).encode())
        total = PartialSum(model_size(service.weights), rule.with_control)
        for part in partials.values():
            total.add(part)
        delivered = total.count
        dropped = outliers(total.norms, service.cfg.policy.max_norm_ratio)
        if dropped:
            answers = self._gather(service, "dropped", "drop", json.dumps({"devices": dropped}).encode())
            for part in answers.values():
                total.add(part, sign=-1)
            for device in dropped:
                service.engine.reject("outlier_norm")
                log.warning("round %d: dropped %s's update (norm above %g x the median)", service.round, device,
                            service.cfg.policy.max_norm_ratio)
        self.per_worker = {w: p.count for w, p in partials.items()}
        return rule.combined(total, service.weights), {"participants": delivered,
                                                       "workers": {str(w): c for w, c in self.per_worker.items()}}
