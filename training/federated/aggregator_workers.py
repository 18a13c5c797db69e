"""Several aggregator workers sharing one fleet's update stream, and the coordinator that adds their sums.

One aggregator process does ~2,000 signed int8 updates per CPU second (``pulsewire aggregator-bench``);
beyond that the stream is split: each worker holds an MQTT 5 shared subscription
``$share/pw-FLEET-agg/pw/FLEET/update/+/+`` on the broker (Mosquitto 2, EMQX, HiveMQ), so the broker hands
each update to exactly one worker. A worker is a whole ``Aggregator`` receive path (decode, signature,
screen, update log with batched fsync and held acknowledgements, fixed-point running sum) with its own
unique client id ``pw-FLEET-aggwN``, its own run directory and its own durable session; it follows the
rounds the coordinator announces (the retained global model) instead of selecting devices itself.

The coordinator is the ordinary aggregator service in ``SharedWorkers`` mode: it selects, announces,
counts deliveries from the workers' progress messages and, to close a round, asks every worker for its
partial sum and adds them. The sums are fixed point (``partial_sums``): three workers' partials add up to
the bits one worker would have summed. The outlier screen runs on the union of the workers' norms; the
workers subtract the dropped updates' exact contributions, read back from their logs.

Topics (QoS 1, under ``pw/FLEET/agg/``): ``ready/W`` (retained), ``progress/W`` (devices accepted lately), ``close/R``,
``partial/R/W``, ``drop/R`` (devices to take out), ``dropped/R/W`` (their contributions).
Strategies that need individual updates (median, trimmed mean, Krum, ...) are refused by ``rule_for``.
"""
from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from broker.aggregation_topics import DOWNWARD, UPWARD, agg_topic, shared_updates
from broker.fed_messages import decode_global
from broker.mqtt_link import BrokerSettings, Message, MqttLink
from broker.signing import verify_message
from broker.topics import FleetTopics
from broker.wire import WireError
from training.federated import checkpoint
from training.federated.aggregator import Aggregator, PlainUpdates
from training.federated.aggregator_config import AggregatorConfig
from training.federated.partial_sums import PartialSum, RunningSum, model_size, outliers, rule_for
from training.federated.round_engine import Rejected
from training.federated.strategies import ClientUpdate, Weights
from training.federated.update_log import LogPolicy, read_record

log = logging.getLogger(__name__)

#: How often a worker reports the devices it accepted.
PROGRESS_EVERY_S = 0.1


class RoundArgs:
    """The sum rule's arguments of each round as the coordinator sent them, on disk: a restarted worker resumes
    its round's running sum with the same clip."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rounds = {int(r): a for r, a in checkpoint.load_json(path).items()} if path.exists() else {}

    def put(self, round_: int, args: dict[str, Any]) -> None:
        self.rounds = {r: a for r, a in self.rounds.items() if r > round_ - 3} | {round_: args}
        checkpoint.save_json(self.path, {str(r): a for r, a in self.rounds.items()})

    def get(self, round_: int, default: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        return self.rounds[round_] if round_ in self.rounds else default()


class AggregatorWorker:
    """One worker: its share of the updates into a running sum; answers the coordinator's close requests."""

    def __init__(self, cfg: AggregatorConfig, initial_weights: Weights, broker: BrokerSettings | str, run_dir: Path,
                 index: int, log_policy: LogPolicy | None = None, aggregator_key: Any = None) -> None:
        """``aggregator_key``: the coordinator's Ed25519 public key when global models are signed."""
        if index < 0:
            raise ValueError(f"worker index {index}: use 0..N-1 for a coordinator of N workers")
        self.cfg, self.fleet, self.index, self.aggregator_key = cfg, cfg.fleet, index, aggregator_key
        self.client_id = f"pw-{cfg.fleet}-aggw{index}"
        #: One FIFO for updates and the coordinator's messages: a round's plan is handled before the updates
        #: that answer it.
        self._inbox: queue.Queue[Message] = queue.Queue()
        self.link = MqttLink(broker, self.client_id,
                             [shared_updates(cfg.fleet), FleetTopics(cfg.fleet).all_globals(),
                              *(agg_topic(cfg.fleet, down) for down in DOWNWARD)],
                             self._inbox.put, manual_ack=True, mqtt5=True)
        self.service = Aggregator(replace(cfg, honour_consent=False, observer=None), initial_weights, broker,
                                  run_dir, log_policy=log_policy, link=self.link)
        if self.service.rule is None:
            rule_for(cfg.strategy, cfg.strategy_args)  # a strategy that needs every update: its ValueError
        #: The sum rule's arguments of each round, as the coordinator sent them (DP-FedAvg's clip).
        self._round_args = RoundArgs(Path(run_dir) / "updates" / "sum_args.json")
        own = self.service.sum_args
        self.service.sum_args = lambda: self._round_args.get(self.service.round, own)
        self.stop_event = threading.Event()
        #: Closed rounds: the partial sent (sent again if asked again) and what a drop request needs.
        self._closed: dict[int, tuple[bytes, dict[str, int], dict[str, list], dict[str, Any]]] = {}
        self._reported = 0
        self.accepted_total = 0

    def _is_update(self, message: Message) -> bool:
        return message.topic.startswith(FleetTopics(self.fleet).all_updates().removesuffix("+/+"))

    def run(self) -> None:
        """Serve until ``stop_event`` is set or the coordinator announces its last round (resuming the round in
        the checkpoint and log, if any)."""
        if self.service.restore():
            log.info("%s: resuming round %d with %d update(s) from its log", self.client_id, self.service.round,
                     len(self.service.accepted))
        self.link.start()
        # retained: the coordinator announces no round before every worker's shared subscription exists (an
        # update published to a group nobody has joined yet is dropped by the broker)
        self.link.publish(agg_topic(self.fleet, "ready", self.index), b"1", qos=1, retain=True)
        last = time.monotonic()
        try:
            while not self.stop_event.is_set():
                self._serve_one(0.02)
                if time.monotonic() - last >= PROGRESS_EVERY_S:
                    self._report_progress()
                    last = time.monotonic()
        finally:
            self.service.sync_log()
            self.link.stop()
            if self.service.update_log is not None:
                self.service.update_log.close()

    def _serve_one(self, timeout: float) -> None:
        service = self.service
        try:
            message = self._inbox.get(timeout=min(timeout, service.log_policy.fsync_interval_s)
                                      if service.holding_acks else timeout)
        except queue.Empty:
            if service.update_log is not None and service.update_log.due():
                service.sync_log()
            return
        if self._is_update(message):
            service.take(message)
            return
        try:
            self._on_control(message)
        except (WireError, ValueError, KeyError) as exc:
            log.warning("%s: ignored %s (%s)", self.client_id, message.topic, exc)
        finally:
            service.ack_in_order(message)

    def _on_control(self, message: Message) -> None:
        parts = message.topic.split("/")
        if parts[2] == "global":
            if message.payload:
                self._on_plan(message.payload)
        elif parts[3] == "close":
            self._on_close(int(parts[4]))
        elif parts[3] == "drop":
            self._on_drop(int(parts[4]), json.loads(message.payload)["devices"])
        elif parts[3] == "rule":
            self._on_rule(int(parts[4]), json.loads(message.payload))

    def _on_plan(self, data: bytes) -> None:
        if self.aggregator_key is not None:
            data = verify_message(data, self.aggregator_key)
        _, model = decode_global(data)
        plan, service = model.plan, self.service
        if plan.final:  # the coordinator's last word: every round is closed
            self.stop_event.set()
            return
        if plan.round < service.round or plan.round in self._closed:
            return
        if plan.round > service.round and service.sums is not None and service.sums.total.count:
            self._seal()  # the close request was missed (offline): the answer waits on disk for it
        if plan.round > service.round or not service.selected:
            service.follow_round(plan.round, list(plan.selected), model.weights)
            self._reported = 0

    def _on_rule(self, round_: int, args: dict[str, Any]) -> None:
        """The sum rule's arguments for ``round_`` (they come before its plan; the worker may already have opened
        the round, empty, when it sealed the previous one)."""
        self._round_args.put(round_, args)
        service = self.service
        if round_ == service.round and service.sums is not None:
            if service.sums.total.count or service.sums.oversized:
                log.warning("%s: round %d's sum rule arrived after updates; keeping the sum", self.client_id, round_)
            else:
                service.rule = service.sum_rule()
                service.sums = RunningSum(service.rule, model_size(service.weights))
        self.link.publish(agg_topic(self.fleet, "ruled", round_, self.index), b"1", qos=1)

    def _report_progress(self) -> None:
        accepted = self.service.accepted
        if len(accepted) <= self._reported:
            return
        fresh = list(itertools.islice(accepted, self._reported, None))
        self._reported = len(accepted)
        self.link.publish(agg_topic(self.fleet, "progress", self.index),
                          json.dumps({"round": self.service.round, "devices": fresh}).encode(), qos=1)

    def _answer_path(self, round_: int) -> Path:
        return self.service.run_dir / "updates" / f"answer{round_}.npz"

    def _seal(self) -> None:
        """End the worker's current round: its sum becomes the answer for that round, fsynced to disk before the
        worker moves on (a restarted worker answers a repeated close request from there), then the next round."""
        service, round_ = self.service, self.service.round
        self._report_progress()
        service.sync_log()
        part, offsets, kept = PartialSum(model_size(service.weights), service.rule.with_control), {}, {}
        if service.sums is not None:
            for device in service.sums.oversized:  # not in the sum: the coordinator never sees them
                service.engine.reject("too_large")
            part, offsets = service.sums.total, dict(service.sums.offsets)
            kept = {d: [u.num_examples, u.local_steps, u.meta] for d, u in service.accepted.items()}
        checkpoint.save(self._answer_path(round_), {"round": round_, "offsets": offsets, "kept": kept,
                                                    "sum_args": service.sum_args()},
                        {"partial": [np.frombuffer(part.to_bytes(), np.uint8)]})
        self.accepted_total += part.count
        for old in self._answer_path(0).parent.glob("answer*.npz"):
            if int(old.stem.removeprefix("answer")) < round_ - 2:
                old.unlink(missing_ok=True)
        service.follow_round(round_ + 1, [], service.weights)
        self._reported = 0

    def _answer(self, round_: int) -> tuple[bytes, dict[str, int], dict[str, list], dict[str, Any]]:
        """This worker's partial sum for ``round_`` (and what a drop request needs: offsets, weights, the sum
        rule's arguments): from memory, from disk, or empty when nothing of that round ever reached this worker."""
        if round_ not in self._closed:
            path = self._answer_path(round_)
            if path.exists():
                manifest, arrays = checkpoint.load(path)
                self._closed[round_] = (bytes(arrays["partial"][0]), manifest["offsets"], manifest["kept"],
                                        manifest.get("sum_args", {}))
            else:
                empty = PartialSum(model_size(self.service.weights), self.service.rule.with_control)
                return empty.to_bytes(), {}, {}, {}
            for old in [r for r in self._closed if r < round_ - 2]:
                del self._closed[old]
        return self._closed[round_]

    def _on_close(self, round_: int) -> None:
        if round_ == self.service.round:
            self._seal()
        self.link.publish(agg_topic(self.fleet, "partial", round_, self.index), self._answer(round_)[0], qos=1)

    def _on_drop(self, round_: int, devices: list[str]) -> None:
        """The exact contributions of the named devices this worker summed in ``round_``."""
        _, offsets, kept, args = self._answer(round_)
        size = model_size(self.service.weights)
        rule = rule_for(self.cfg.strategy, {**self.cfg.strategy_args, **args})  # the round's, not today's
        part = PartialSum(size, rule.with_control)
        for device in devices:
            if device in offsets:
                record = read_record(self.service.log_path(round_), offsets[device])
                _, update = self.service.decode(device, record.payload)
                examples, steps, meta = kept[device]
                part.add(rule.contribution(ClientUpdate(device, update.delta, examples, steps,
                                                             update.control_delta, meta), size))
        self.link.publish(agg_topic(self.fleet, "dropped", round_, self.index), part.to_bytes(), qos=1)


class SharedWorkers(PlainUpdates):
    """The coordinator's round mode: updates go to ``workers`` AggregatorWorkers; it adds their partial sums."""

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
        engine = service.engine
        while True:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                return
            parts = message.topic.split("/")
            if parts[3] == "ready":
                self._ready.add(int(parts[4]))
            elif parts[3] == "progress":
                note = json.loads(message.payload)
                if note.get("round") == engine.round:
                    for device in note["devices"]:
                        if device in engine.selected and device not in engine.accepted:  # a Selection: O(1)
                            engine.accepted[device] = ClientUpdate(device, [], 1, 1)
            else:
                self._answers[(parts[3], int(parts[4]), int(parts[5]))] = message.payload

    def _gather(self, service: Aggregator, kind: str, ask: str, payload: bytes) -> dict[int, PartialSum]:
        """Every worker's partial sum of the kind asked for."""
        size = model_size(service.weights)
        return {w: PartialSum.from_bytes(v, size) for w, v in self._collect(service, kind, ask, payload).items()}

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
            log.warning("round %d: worker(s) %s have not sent their %s sum; asking again", round_, missing, kind)

    def close(self, service: Aggregator) -> tuple[list[ClientUpdate] | None, dict[str, Any]]:
        self._ensure_link(service)
        self._drain(service)
        rule = service.rule  # the round's (DP-FedAvg: with the round's clip)
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


def coordinator(cfg: AggregatorConfig, initial_weights: Weights, broker: BrokerSettings | str, run_dir: Path,
                workers: int, **kwargs: Any) -> Aggregator:
    """The aggregator service that selects, announces and adds ``workers`` partial sums (it receives no update)."""
    service = Aggregator(cfg, initial_weights, broker, run_dir, mode=SharedWorkers(workers),
                         subscriptions=[FleetTopics(cfg.fleet).all_statuses()], **kwargs)
    if service.rule is None:
        rule_for(cfg.strategy, cfg.strategy_args)  # a strategy that needs every update: its ValueError
    return service
