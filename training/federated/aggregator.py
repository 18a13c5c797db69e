"""The aggregator: a long-running MQTT service that runs federated rounds.

Each round it selects devices, publishes the global model with the round plan (retained, so a device
that connects late still gets it), collects what the devices send until every selected device answered,
or until the deadline with a quorum, and closes the round. The round logic itself (selection, screening,
outlier check, budget stop, strategy hooks, evaluation, best round) is ``RoundEngine``'s, the same the
in-process simulation runs; this module is its MQTT transport and its crash safety.

How a round's contributions arrive is the service's ``mode``: ``PlainUpdates`` (each device publishes its
update) or secure aggregation (``training.federated.secagg_round.SecureAggregation``: masked inputs, and the
engine aggregates only their decoded sum).

The service is composed, not inherited: it holds the ``RoundEngine`` (the round's rules and state), an
``UpdateScreen`` (``training.federated.update_screen``: every received message is routed, verified and
decoded there; anything that cannot enter the round is logged, counted by reason and acknowledged, and the
service keeps serving) and a ``RoundJournal`` (``training.federated.round_durability``: the update log, the
acknowledgements that wait for its fsync, the checkpoint and the replay after a crash) and a ``RoundSum``
(``training.federated.round_sum``), and calls them.

Cost per accepted update is O(1): the message is appended to the round's update log and, for strategies that
allow it, added into the round's fixed-point running sum and forgotten.

Imports no TensorFlow: evaluation is a callback the caller supplies.
"""
from __future__ import annotations

import logging
import queue
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from broker.chunking import Reassembler
from broker.fed_messages import GlobalModel, RoundPlan, encode_global
from broker.mqtt_link import Message, MqttLink
from broker.signing import sign_message
from broker.topics import FleetTopics, TopicMatch
from broker.wire import Kind, WireError, decode_header
from training.federated.aggregator_config import AggregatorConfig
from training.federated.consent_watch import ConsentWatch
from training.federated.partial_sums import model_size
from training.federated.registry import make_fleet_strategy
from training.federated.round_durability import RoundJournal
from training.federated.round_engine import Evaluator, Rejected, RoundEngine, Selection
from training.federated.round_files import CHECKPOINT_FILE, LOG_DIR, RoundFiles
from training.federated.round_sum import RoundSum
from training.federated.strategies import ClientUpdate, Strategy, Weights
from training.federated.update_log import LogPolicy, read_record
from training.federated.update_screen import UpdateScreen

log = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_FILE", "LOG_DIR", "AggregationResult", "Aggregator", "PlainUpdates", "RoundMode"]


@dataclass
class AggregationResult:
    final_weights: Weights
    best_weights: Weights
    best_round: int
    history: list[dict]
    rejected: dict[str, int]


class RoundMode(Protocol):
    """How a round's contributions reach the engine over MQTT (plain updates, or secure aggregation)."""

    def plan_extras(self, service: Aggregator) -> dict[str, Any]:
        """Entries added to the round plan's ``local`` settings."""

    def collect(self, service: Aggregator) -> None:
        """Take in the round's messages until it can close."""

    def screen_update(self, service: Aggregator, topic: TopicMatch, payload: bytes) -> None:
        """A message on a device's update topic; raise Rejected for anything that cannot enter the round."""

    def close(self, service: Aggregator) -> tuple[list[ClientUpdate] | None, dict[str, Any]]:
        """What the strategy aggregates (None: the accepted updates) and the mode's fields of the round's row."""


class PlainUpdates:
    """Each selected device publishes its update; the engine screens and aggregates them one by one."""

    def plan_extras(self, service: Aggregator) -> dict[str, Any]:
        return {}

    def collect(self, service: Aggregator) -> None:
        engine = service.engine  # when to close (answers, deadline, quorum, a full FedBuff buffer): the engine's rule
        while engine.close_due() is None:
            if engine.extended and service.announcements == 1:
                service.announce_again()
            self.wait(service, max(0.01, min(engine.next_deadline() - engine.clock(), 0.5)))

    def wait(self, service: Aggregator, timeout: float) -> None:
        """Take in what arrives for up to ``timeout`` seconds (a batch: the round's close check counts the whole
        selection, so it runs once per batch, not once per update)."""
        service.serve_batch(timeout)

    def screen_update(self, service: Aggregator, topic: TopicMatch, payload: bytes) -> None:
        try:
            header, _ = decode_header(payload, allow_signed=True)
            data = payload
            if header.kind == Kind.CHUNK:
                data = service.reassembler.feed(payload)
                if data is None:
                    return
        except WireError as exc:
            raise Rejected(exc.reason, str(exc)) from exc
        self.take(service, topic, data)

    def take(self, service: Aggregator, topic: TopicMatch, data: bytes) -> tuple[int, ClientUpdate]:
        """A whole UPDATE message into the round; returns its round and the update as decoded (raises Rejected)."""
        round_, update = service.screen.decode(topic.device, data)
        if round_ != topic.round:
            raise Rejected("round_mismatch", f"topic round {topic.round}, header round {round_}")
        service.accept(round_, update, data)
        return round_, update

    def close(self, service: Aggregator) -> tuple[list[ClientUpdate] | None, dict[str, Any]]:
        return None, {}


class Aggregator:
    """The service: rounds opened, announced, collected and closed over MQTT. It holds the round's rules
    (``engine``), the screen of what arrives (``screen``), the crash safety (``journal``) and the running sum
    (``round_sum``), and calls them."""

    def __init__(self, cfg: AggregatorConfig, initial_weights: Weights, broker_url: str, run_dir: Path,
                 evaluate: Evaluator | None = None, on_round: Callable[[dict], None] | None = None,
                 select_on: str = "val_macro_f1", signing_key: Any = None, mode: RoundMode | None = None,
                 log_policy: LogPolicy | None = None, subscriptions: list[str] | None = None,
                 link: MqttLink | None = None) -> None:
        """``log_policy``: how often the update log is fsynced (acknowledgements wait for it);
        ``subscriptions``: what the service's own link subscribes to (default: every update and status);
        ``link``: a connection its owner made, which puts the service's messages into ``inbox``
        (``aggregator_workers``: a worker's MQTT 5 link with a shared subscription)."""
        self.cfg = cfg
        self.topics = FleetTopics(cfg.fleet)
        self.run_dir = Path(run_dir)
        self.on_round = on_round
        self.signing_key = signing_key  # Ed25519 private key: global models go out signed
        self.strategy: Strategy = make_fleet_strategy(cfg.strategy, cfg.strategy_args, len(cfg.devices), cfg.dp_noise,
                                                      cfg.seed)
        if cfg.dp_noise != "secure":
            log.warning("aggregator %s: DP noise source %r asked for: predictable noise, no DP guarantee in "
                        "deployment (the privacy ledger records it)", cfg.fleet, cfg.dp_noise)
        self.engine = RoundEngine(self.strategy, list(cfg.devices), cfg.policy, cfg.rounds, initial_weights,
                                  cfg.seed, evaluate, select_on)
        self.mode: RoundMode = mode or PlainUpdates()
        self.round_sum = RoundSum(cfg.strategy, cfg.strategy_args, self.strategy.sum_args)
        self.log_policy = log_policy or LogPolicy()
        self.files = RoundFiles(self.run_dir, cfg.fleet, cfg.strategy, cfg.policy.max_staleness, self.log_policy)
        self.screen = UpdateScreen(cfg, self.engine)
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.reassembler = Reassembler()
        self._round_started = time.monotonic()
        self._model_bytes = 0
        self._announced = b""
        self.announcements = 0  # of the current round's model: 1, or 2 after a deadline below the quorum
        self.consent = ConsentWatch(cfg.fleet, broker_url, cfg.consent_key) if cfg.honour_consent else None
        self.link = link or MqttLink(broker_url, f"pw-{cfg.fleet}-aggregator",
                                     subscriptions or [self.topics.all_updates(), self.topics.all_statuses()],
                                     self.inbox.put, manual_ack=True)
        self.journal = RoundJournal(self.files, self.engine, self.link.ack)

    # the engine's state, as the service's callers and tests know it
    weights = property(lambda self: self.engine.weights)
    best_weights = property(lambda self: self.engine.best_weights)
    history = property(lambda self: self.engine.history)
    rejected = property(lambda self: self.engine.rejected)
    declined = property(lambda self: self.engine.declined)
    round = property(lambda self: self.engine.round, lambda self, v: setattr(self.engine, "round", v))
    selected = property(lambda self: self.engine.selected, lambda self, v: setattr(self.engine, "selected", v))
    accepted = property(lambda self: self.engine.accepted, lambda self, v: setattr(self.engine, "accepted", v))

    @property
    def status(self) -> dict[str, dict]:
        """Each device's last status report (what status-fed selection reads)."""
        return self.screen.status

    # ------------------------------------------------------------------------------ the service
    def run(self) -> AggregationResult:
        resumed = self.restore()
        if self.consent is not None:
            self.consent.start()
        self.link.start()
        if resumed:
            log.info("resuming round %d with %d accepted update(s) from %s and its update log", self.round,
                     len(self.accepted), self.files.checkpoint_path)
        elif self.cfg.policy.uses_status:
            self._settle_statuses(self.cfg.policy.status_settle_s)
        while not self.engine.finished:
            if not self.selected:
                if not self.open_round():
                    break  # the strategy's privacy budget: no further round
                if self.cfg.observer:
                    self.cfg.observer.opened(self.link, self.round, self.cfg.strategy, self.selected, self.cfg.rounds)
            self._announce()
            self.mode.collect(self)
            self._close_round()
        self._announce(final=True)
        self._drain(seconds=0.5)
        self.journal.sync()
        self.link.stop()
        self.journal.close()
        if self.consent is not None:
            self.consent.stop()
        e = self.engine
        return AggregationResult(e.weights, e.best_weights, e.best_round, e.history, dict(e.rejected))

    def open_round(self) -> bool:
        """Select the round's devices (False: the strategy's budget ends the run), checkpoint, start its log."""
        withdrawn = self.consent.withdrawn() if self.consent is not None else frozenset()
        if withdrawn:
            log.info("round %d: not selecting %s (training consent withdrawn)", self.round, sorted(withdrawn))
        if not self.engine.open_round(self.status, withdrawn):
            return False
        self.engine.selected = Selection(self.engine.selected)
        self.journal.save()
        self._open_log()
        return True

    def _open_log(self) -> None:
        """Start (or reopen) the current round's log; a new one comes with a fresh running sum under the
        round's rule (DP-FedAvg's clip moves between rounds)."""
        if self.journal.open(self.round):
            self.round_sum.restart(model_size(self.weights))

    def restore(self) -> bool:
        """Load the checkpoint and replay the current round's log; False when there is no checkpoint."""
        if not self.journal.load():
            return False
        self._open_log()
        self.journal.replay(lambda topic, payload: self.mode.screen_update(self, topic, payload), self.cfg.fleet)
        return True

    def _plan(self, final: bool = False) -> RoundPlan:
        local = {**self.cfg.local, **self.strategy.client_config()}
        if not final:
            local.update(self.mode.plan_extras(self))
        return RoundPlan(self.round, () if final else tuple(self.selected), local, self.cfg.encoding,
                         self.cfg.chunk_size, final)

    def _announce(self, final: bool = False) -> None:
        control = self.strategy.server_control(self.weights)
        message = encode_global(self.cfg.fleet, GlobalModel(self._plan(final), self.weights, control))
        if self.signing_key is not None:
            message = sign_message(message, self.signing_key)
        self._model_bytes, self._announced, self.announcements = len(message), message, 1
        self.link.publish(self.topics.global_model(self.round), message, qos=1, retain=True)
        if self.round > 1:  # only the current round stays retained
            self.link.publish(self.topics.global_model(self.round - 1), b"", qos=1, retain=True)
        self._round_started = time.monotonic()
        if not final:
            log.info("round %d/%d: model published to %d device(s)", self.round, self.cfg.rounds, len(self.selected))

    def announce_again(self) -> None:
        """Publish the round's model once more (the same bytes: a device that already trains on it only
        rejoins). A device can miss the first copy for good: a subscription not yet bound when it went out, or a
        RabbitMQ cluster, whose retained copy stays on the aggregator's node and never reaches a wildcard."""
        log.warning("round %d: below the quorum at the deadline; announcing the model again", self.round)
        self.link.publish(self.topics.global_model(self.round), self._announced, qos=1, retain=True)
        self.announcements += 1

    def publish(self, topic: str, data: bytes, recipients: int = 1) -> int:
        """Publish (signed when the service has a key) a protocol message; returns the bytes sent down."""
        if self.signing_key is not None:
            data = sign_message(data, self.signing_key)
        self.link.publish(topic, data, qos=1)
        return len(data) * recipients

    def serve_one(self, timeout: float) -> None:
        """Take in one message if one arrives within ``timeout`` seconds; fsync the log (and send the
        acknowledgements it holds) when its batch is full or old enough."""
        if self.journal.holding_acks:
            timeout = min(timeout, self.log_policy.fsync_interval_s)
        try:
            message = self.inbox.get(timeout=timeout)
        except queue.Empty:
            message = None
        if message is not None:
            self.take(message)
        elif self.journal.due():
            self.journal.sync()

    def serve_batch(self, timeout: float, budget_s: float = 0.05) -> None:
        """``serve_one``, then whatever is already queued, for up to ``budget_s`` seconds (or until a FedBuff
        buffer is full: what arrives after its K-th update belongs to the next version)."""
        self.serve_one(timeout)
        end = time.monotonic() + budget_s
        while time.monotonic() < end and not self.engine.buffer_full():
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                return
            self.take(message)

    def take(self, message: Message) -> None:
        """Screen one received message (its acknowledgement may wait for the log's next fsync), then fsync the
        log if its batch is full or old enough."""
        self._handle(message)
        if self.journal.due():
            self.journal.sync()

    def _handle(self, message: Message) -> None:
        """One message through the screen and the round mode; a rejection is counted, and every message is
        acknowledged (after the log's fsync when it waits for one)."""
        try:
            if (topic := self.screen.route(message)) is not None:
                self.mode.screen_update(self, topic, message.payload)
        except Rejected as rej:
            self.screen.count(rej, message.topic)
            if self.cfg.observer:
                self.cfg.observer.rejected(self.link, self.round, message.topic, rej.reason, rej.detail)
        finally:
            self.journal.ack_in_order(message)

    def accept(self, round_: int, update: ClientUpdate, data: bytes) -> ClientUpdate:
        """Take a decoded update into the round (the engine's screen raises Rejected); an accepted one is
        logged (the message bytes) and, with a running sum, added to it and forgotten: the engine keeps only its
        weight and metadata. O(1) whatever the round's size. Returns the update as it entered the round."""
        device = self.engine.accept(update.device, round_, update).device
        kept = self.engine.accepted[device]
        if self.round_sum.add(kept, self.journal.append(device, round_, data)):
            self.engine.accepted[device] = ClientUpdate(device, [], kept.num_examples, kept.local_steps, None,
                                                        kept.meta)
        log.debug("round %d: accepted %s (%d examples)", self.round, device, kept.num_examples)
        return kept

    def _settle_statuses(self, limit_s: float, quiet_s: float = 0.5) -> None:
        """Take in the devices' retained statuses before drawing round 1 from them: until none has arrived for
        ``quiet_s`` seconds, or ``limit_s`` seconds in all."""
        start = quiet_from = time.monotonic()
        known = len(self.status)
        while (now := time.monotonic()) - start < limit_s and now - quiet_from < quiet_s:
            self.serve_one(0.05)
            if len(self.status) != known:
                known, quiet_from = len(self.status), time.monotonic()
        log.info("first round drawn from %d device status(es) (%.1f s)", known, time.monotonic() - start)

    def _drain(self, seconds: float) -> None:
        """Keep acknowledging (and counting) what still arrives for a moment after the last round."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.serve_one(0.1)

    # ------------------------------------------------------------------------------ closing a round
    def _close_round(self) -> None:
        self.journal.sync()
        accepted = list(self.accepted)  # the engine forgets them when it closes the round
        combined, extra = self.mode.close(self)
        if combined is None and self.round_sum.rule is not None:
            combined = self.round_sum.combined(self.engine, self.cfg.policy.max_norm_ratio, self.logged_update,
                                               self.weights)
        elif combined is None:  # individual updates in device order: the aggregate does not depend on arrival
            self.engine.accepted = dict(sorted(self.engine.accepted.items()))  # (or on which worker got which)
        counts = self.engine.round_counts
        transport = {"bytes_received": counts["bytes_received"], "model_bytes": self._model_bytes,
                     "bytes_down": self._model_bytes * len(self.selected) * self.announcements,
                     "quorum_met": counts["rounds_below_quorum"] == 0,
                     "seconds": time.monotonic() - self._round_started}
        row = self.engine.close_round(combined, {**transport, **extra})
        if self.cfg.observer:
            self.cfg.observer.closed(self.link, row, self.cfg.strategy, accepted, self.strategy.privacy_budget())
        self.journal.save()
        self._open_log()
        self.files.write_metrics(self.history, self.engine.book.fairness())
        if self.on_round:
            self.on_round(row)

    def follow_round(self, round_: int, selected: list[str], weights: Weights) -> None:
        """Enter ``round_`` as the coordinator announced it (an aggregator worker selects nobody itself): a
        new round starts a fresh log and running sum; the same round only learns its selection and model."""
        self.journal.sync()
        engine = self.engine
        if round_ != engine.round:
            engine.round, engine.accepted, engine.declined, engine.round_counts = round_, {}, set(), Counter()
            engine.recent = {(r, d) for r, d in engine.recent if r >= round_ - 1 - self.cfg.policy.max_staleness}
        engine.selected, engine.weights = Selection(selected), [np.asarray(w, np.float32) for w in weights]
        self.journal.save()
        self._open_log()

    def logged_update(self, device: str) -> ClientUpdate:
        """``device``'s update as it entered the current round's sum, read back from the log."""
        kept, offset = self.engine.accepted[device], self.round_sum.running.offsets[device]
        _, update = self.screen.decode(device, read_record(self.journal.log.path, offset).payload)
        return ClientUpdate(device, update.delta, kept.num_examples, kept.local_steps, update.control_delta, kept.meta)
