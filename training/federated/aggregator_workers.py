"""Several aggregator workers sharing one fleet's update stream (the coordinator's side: ``worker_coordinator``).

One aggregator process does ~2,000 signed int8 updates per CPU second (``pulsewire aggregator-bench``);
beyond that the stream is split: each worker holds an MQTT 5 shared subscription
``$share/pw-FLEET-agg/pw/FLEET/update/+/+`` on the broker (Mosquitto 2, EMQX, HiveMQ), so the broker hands
each update to exactly one worker. A worker is a whole ``Aggregator`` receive path (decode, signature,
screen, update log with batched fsync and held acknowledgements) with its own unique client id
``pw-FLEET-aggwN``, its own run directory and its own durable session; it follows the rounds the coordinator
announces (the retained global model) instead of selecting devices itself.

What a worker does with an accepted update depends on the strategy:

- **summing** (a sum rule exists, ``partial_sums.rule_for``: FedAvg and its relatives, FedNova, SCAFFOLD,
  norm bounding with a fixed clip, DP-FedAvg): into a fixed-point running sum; a close request is answered
  with the partial sum, a drop request (the outlier screen on the union of the norms) with the exact
  contributions of the dropped devices, read back from the log. DP-FedAvg's clip of the round comes from the
  coordinator (``rule/R``) before the round is announced.
- **forwarding** (median, trimmed mean, Krum, norm bounding to the median norm: ``forwarded_updates``): to the
  coordinator, decoded, as int8 and a scale per tensor; a close request is answered with the devices forwarded.

Asynchronous strategies (FedBuff) are refused: their buffers are the coordinator's engine's.
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

from broker.aggregation_topics import DOWNWARD, agg_topic, shared_updates
from broker.fed_messages import decode_global
from broker.mqtt_link import BrokerSettings, Message, MqttLink
from broker.signing import verify_message
from broker.topics import FleetTopics
from broker.wire import WireError
from training.federated import checkpoint
from training.federated.aggregator import Aggregator
from training.federated.aggregator_config import AggregatorConfig
from training.federated.forwarded_updates import ForwardAccepted, ForwardingWorkers, encode_forwards
from training.federated.partial_sums import PartialSum, model_size, rule_for
from training.federated.round_engine import Rejected
from training.federated.strategies import ClientUpdate, Weights
from training.federated.update_log import LogPolicy, read_record, scan
from training.federated.worker_coordinator import SharedWorkers

log = logging.getLogger(__name__)

#: How often a worker reports the devices it accepted (or forwards their updates).
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


def synchronous(service: Aggregator) -> Aggregator:
    """``service``, unless its strategy runs asynchronous rounds (ValueError: workers do not run those)."""
    if service.strategy.buffering() is not None:
        raise ValueError(f"strategy {service.cfg.strategy!r} runs asynchronous rounds (its buffers are the "
                         "coordinator's): run it on one aggregator, without --workers")
    return service


class AggregatorWorker:
    """One worker: its share of the updates into a running sum, or forwarded to the coordinator; answers the
    coordinator's close requests."""

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
        synchronous(self.service)
        #: Strategies that need every update: the worker's round mode keeps them until forwarded.
        self.forwarding = ForwardAccepted() if self.service.round_sum.rule is None else None
        if self.forwarding is not None:
            self.service.mode = self.forwarding
        #: The sum rule's arguments of each round, as the coordinator sent them (DP-FedAvg's clip).
        self._round_args = RoundArgs(Path(run_dir) / "updates" / "sum_args.json")
        own = self.service.round_sum.args
        self.service.round_sum.args = lambda: self._round_args.get(self.service.round, own)
        self.stop_event = threading.Event()
        #: Closed rounds: the partial sent (sent again if asked again) and what a drop request needs.
        self._closed: dict[int, tuple[bytes, dict[str, int], dict[str, list], dict[str, Any]]] = {}
        self._reported = 0
        self.accepted_total = 0
        #: True once this worker has followed (or restored) a round of the run: a final plan means "stop" only
        #: then; before, it is the retained last word of an earlier run on the same fleet.
        self._in_run = False

    def _is_update(self, message: Message) -> bool:
        return message.topic.startswith(FleetTopics(self.fleet).all_updates().removesuffix("+/+"))

    def run(self) -> None:
        """Serve until ``stop_event`` is set or the coordinator announces its last round (resuming the round in
        the checkpoint and log, if any)."""
        if self.service.restore():
            self._in_run = True
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
            self.service.journal.sync()
            self.link.stop()
            self.service.journal.close()

    def _serve_one(self, timeout: float) -> None:
        service, journal = self.service, self.service.journal
        try:
            message = self._inbox.get(timeout=min(timeout, service.log_policy.fsync_interval_s)
                                      if journal.holding_acks else timeout)
        except queue.Empty:
            if journal.due():
                journal.sync()
            return
        if self._is_update(message):
            service.take(message)
            return
        try:
            self._on_control(message)
        except (WireError, ValueError, KeyError) as exc:
            log.warning("%s: ignored %s (%s)", self.client_id, message.topic, exc)
        finally:
            journal.ack_in_order(message)

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
        elif parts[3] == "fetch":
            self._on_fetch(int(parts[4]), json.loads(message.payload)["devices"])

    def _on_plan(self, data: bytes) -> None:
        if self.aggregator_key is not None:
            data = verify_message(data, self.aggregator_key)
        _, model = decode_global(data)
        plan, service = model.plan, self.service
        if plan.final:  # the coordinator's last word: every round is closed
            if self._in_run:
                self.stop_event.set()
            else:
                log.info("%s: ignored the final plan of an earlier run (round %d); waiting for this run's first",
                         self.client_id, plan.round)
            return
        if plan.round < service.round or plan.round in self._closed:
            return
        if plan.round > service.round and service.accepted:
            self._seal()  # the close request was missed (offline): the answer waits on disk for it
        if plan.round > service.round or not service.selected:
            service.follow_round(plan.round, list(plan.selected), model.weights)
            self._in_run = True
            self._reported = 0

    def _on_rule(self, round_: int, args: dict[str, Any]) -> None:
        """The sum rule's arguments for ``round_`` (they come before its plan; the worker may already have opened
        the round, empty, when it sealed the previous one)."""
        self._round_args.put(round_, args)
        service = self.service
        running = service.round_sum.running
        if round_ == service.round and running is not None:
            if running.total.count or running.oversized:
                log.warning("%s: round %d's sum rule arrived after updates; keeping the sum", self.client_id, round_)
            else:
                service.round_sum.restart(model_size(service.weights))
        self.link.publish(agg_topic(self.fleet, "ruled", round_, self.index), b"1", qos=1)

    def _report_progress(self) -> None:
        if self.forwarding is not None:
            if (batch := self.forwarding.flush()) is not None:
                self.link.publish(agg_topic(self.fleet, "forward", self.index), batch, qos=1)
            return
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
        service.journal.sync()
        offsets, kept = {}, {}
        if self.forwarding is not None:
            answer, taken = json.dumps({"devices": sorted(service.accepted)}).encode(), len(service.accepted)
        else:
            running = service.round_sum.running
            part = PartialSum(model_size(service.weights), service.round_sum.rule.with_control)
            if running is not None:
                for device in running.oversized:  # not in the sum: the coordinator never sees them
                    service.engine.reject("too_large")
                part, offsets = running.total, dict(running.offsets)
                kept = {d: [u.num_examples, u.local_steps, u.meta] for d, u in service.accepted.items()}
            answer, taken = part.to_bytes(), part.count
        checkpoint.save(self._answer_path(round_), {"round": round_, "offsets": offsets, "kept": kept,
                                                    "sum_args": service.round_sum.args()},
                        {"partial": [np.frombuffer(answer, np.uint8)]})
        self.accepted_total += taken
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
            elif self.forwarding is not None:
                return json.dumps({"devices": []}).encode(), {}, {}, {}
            else:
                empty = PartialSum(model_size(self.service.weights), self.service.round_sum.rule.with_control)
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
                record = read_record(self.service.journal.log_path(round_), offsets[device])
                _, update = self.service.screen.decode(device, record.payload)
                examples, steps, meta = kept[device]
                part.add(rule.contribution(ClientUpdate(device, update.delta, examples, steps,
                                                             update.control_delta, meta), size))
        self.link.publish(agg_topic(self.fleet, "dropped", round_, self.index), part.to_bytes(), qos=1)


    def _on_fetch(self, round_: int, devices: list[str]) -> None:
        """Forward the named devices' updates of ``round_`` again, read back from the log (the coordinator did
        not receive them: it restarted, or a forward batch was lost)."""
        service, wanted, again = self.service, set(devices), []
        if self.forwarding is None or not service.journal.log_path(round_).exists():
            return
        service.journal.sync()
        for record in scan(service.journal.log_path(round_)):
            if record.device in wanted:
                try:
                    again.append(service.screen.decode(record.device, record.payload))
                except Rejected as rej:
                    log.warning("%s: %s's logged update not forwarded again (%s)", self.client_id, record.device,
                                rej.reason)
        if again:
            self.link.publish(agg_topic(self.fleet, "forward", self.index), encode_forwards(again), qos=1)


def coordinator(cfg: AggregatorConfig, initial_weights: Weights, broker: BrokerSettings | str, run_dir: Path,
                workers: int, **kwargs: Any) -> Aggregator:
    """The aggregator service that selects and announces for ``workers`` AggregatorWorkers (it receives no
    update): it adds their partial sums, or, for a strategy that needs every update, aggregates the updates
    they forward."""
    service = synchronous(Aggregator(cfg, initial_weights, broker, run_dir, mode=SharedWorkers(workers),
                                     subscriptions=[FleetTopics(cfg.fleet).all_statuses()], **kwargs))
    if service.round_sum.rule is None:
        service.mode = ForwardingWorkers(workers)
    return service
