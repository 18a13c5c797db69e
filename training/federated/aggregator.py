"""The aggregator: a long-running MQTT service that runs federated rounds.

Each round it selects devices, publishes the global model with the round plan (retained, so a device
that connects late still gets it), collects what the devices send until every selected device answered,
or until the deadline with a quorum, and closes the round. The round logic itself (selection, screening,
outlier check, budget stop, strategy hooks, evaluation, best round) is ``RoundEngine``'s, the same the
in-process simulation runs; this module is its MQTT transport and its crash safety.

How a round's contributions arrive is the service's ``mode``: ``PlainUpdates`` (each device publishes its
update) or secure aggregation (``training.federated.secagg_round.SecureAggregation``: masked inputs, and the
engine aggregates only their decoded sum).

Every received message goes through one screening path; anything that cannot enter the round
(malformed bytes, unknown device, wrong fleet, stale or future round, duplicate, NaN, wrong shapes)
is logged, counted by reason and acknowledged, and the service keeps serving. An accepted update is
checkpointed before its MQTT acknowledgement, and the session is persistent: after a crash the
broker redelivers whatever was not yet safe on disk, and the restarted aggregator resumes its round.

Imports no TensorFlow: evaluation is a callback the caller supplies.
"""
from __future__ import annotations

import csv
import json
import logging
import queue
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from broker.chunking import Reassembler
from broker.device_messages import decode_status
from broker.fed_messages import GlobalModel, RoundPlan, decode_update, encode_global, fleet_id
from broker.mqtt_link import Message, MqttLink
from broker.signing import sign_message, verify_message
from broker.topics import FleetTopics, TopicMatch, parse_topic
from broker.wire import Header, Kind, WireError, decode_header
from training.federated import checkpoint
from training.federated.aggregator_config import AggregatorConfig
from training.federated.consent_watch import ConsentWatch
from training.federated.registry import make_fleet_strategy
from training.federated.round_engine import Evaluator, Rejected, RoundEngine
from training.federated.strategies import ClientUpdate, Strategy, Weights

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "aggregator.npz"
#: The current round's accepted updates, one file each: ``accepted/round{r}/{device}.npz``.
ACCEPTED_DIR = "accepted"
_Rejected = Rejected  # the name this module used before the engine existed


@dataclass
class AggregationResult:
    final_weights: Weights
    best_weights: Weights
    best_round: int
    history: list[dict]
    rejected: dict[str, int]


class RoundMode(Protocol):
    """How a round's contributions reach the engine over MQTT (plain updates, or secure aggregation)."""

    def plan_extras(self, service: "Aggregator") -> dict[str, Any]:
        """Entries added to the round plan's ``local`` settings."""

    def collect(self, service: "Aggregator") -> None:
        """Take in the round's messages until it can close."""

    def screen_update(self, service: "Aggregator", topic: TopicMatch, payload: bytes) -> None:
        """A message on a device's update topic; raise Rejected for anything that cannot enter the round."""

    def close(self, service: "Aggregator") -> tuple[list[ClientUpdate] | None, dict[str, Any]]:
        """What the strategy aggregates (None: the accepted updates) and the mode's fields of the round's row."""


class PlainUpdates:
    """Each selected device publishes its update; the engine screens and aggregates them one by one."""

    def plan_extras(self, service: "Aggregator") -> dict[str, Any]:
        return {}

    def collect(self, service: "Aggregator") -> None:
        engine = service.engine  # when to close (answers, deadline, quorum, a full FedBuff buffer): the engine's rule
        while engine.close_due() is None:
            service.serve_one(max(0.01, min(engine.next_deadline() - engine.clock(), 0.5)))

    def screen_update(self, service: "Aggregator", topic: TopicMatch, payload: bytes) -> None:
        device = topic.device
        try:
            header, _ = decode_header(payload, allow_signed=True)
            data = payload
            if header.kind == Kind.CHUNK:
                data = service.reassembler.feed(payload)
                if data is None:
                    return
            header, update = decode_update(service.verified(device, data))
        except WireError as exc:
            raise Rejected(exc.reason, str(exc)) from exc
        service.check_sender(device, header)
        if header.round != topic.round:
            raise Rejected("round_mismatch", f"topic round {topic.round}, header round {header.round}")
        service._accept(device, header.round, ClientUpdate(device, update.delta, update.num_examples,
                                                           update.local_steps, update.control_delta,
                                                           {"train_loss": update.train_loss}))

    def close(self, service: "Aggregator") -> tuple[list[ClientUpdate] | None, dict[str, Any]]:
        return None, {}


class Aggregator:
    def __init__(self, cfg: AggregatorConfig, initial_weights: Weights, broker_url: str, run_dir: Path,
                 evaluate: Evaluator | None = None, on_round: Callable[[dict], None] | None = None,
                 select_on: str = "val_macro_f1", signing_key: Any = None, mode: RoundMode | None = None) -> None:
        self.cfg = cfg
        self.topics = FleetTopics(cfg.fleet)
        self.run_dir = Path(run_dir)
        self.on_round = on_round
        self.signing_key = signing_key  # Ed25519 private key: global models go out signed
        self.strategy: Strategy = make_fleet_strategy(cfg.strategy, cfg.strategy_args, len(cfg.devices))
        self.engine = RoundEngine(self.strategy, list(cfg.devices), cfg.policy, cfg.rounds, initial_weights,
                                  cfg.seed, evaluate, select_on)
        self.mode: RoundMode = mode or PlainUpdates()
        self.status: dict[str, dict] = {}
        self._inbox: queue.Queue[Message] = queue.Queue()
        self.reassembler = Reassembler()
        self._round_started = time.monotonic()
        self._model_bytes = 0
        self.consent = ConsentWatch(cfg.fleet, broker_url, cfg.consent_key) if cfg.honour_consent else None
        self.link = MqttLink(broker_url, f"pw-{cfg.fleet}-aggregator",
                             [self.topics.all_updates(), self.topics.all_statuses()], self._inbox.put,
                             manual_ack=True)

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
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    # ------------------------------------------------------------------------------ the service
    def run(self) -> AggregationResult:
        resumed = self._restore()
        if self.consent is not None:
            self.consent.start()
        self.link.start()
        if resumed:
            log.info("resuming round %d with %d accepted update(s) from %s", self.round, len(self.accepted),
                     self.checkpoint_path)
        while not self.engine.finished:
            if not self.selected:
                withdrawn = self.consent.withdrawn() if self.consent is not None else frozenset()
                if withdrawn:
                    log.info("round %d: not selecting %s (training consent withdrawn)", self.round, sorted(withdrawn))
                if not self.engine.open_round(self.status, withdrawn):
                    break  # the strategy's privacy budget: no further round
                self._save()
                if self.cfg.observer:
                    self.cfg.observer.opened(self.link, self.round, self.cfg.strategy, self.selected, self.cfg.rounds)
            self._announce()
            self.mode.collect(self)
            self._close_round()
        self._announce(final=True)
        self._drain(seconds=0.5)
        self.link.stop()
        if self.consent is not None:
            self.consent.stop()
        e = self.engine
        return AggregationResult(e.weights, e.best_weights, e.best_round, e.history, dict(e.rejected))

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
        self._model_bytes = len(message)
        self.link.publish(self.topics.global_model(self.round), message, qos=1, retain=True)
        if self.round > 1:  # only the current round stays retained
            self.link.publish(self.topics.global_model(self.round - 1), b"", qos=1, retain=True)
        self._round_started = time.monotonic()
        if not final:
            log.info("round %d/%d: model published to %d device(s)", self.round, self.cfg.rounds, len(self.selected))

    def publish(self, topic: str, data: bytes, recipients: int = 1) -> int:
        """Publish (signed when the service has a key) a protocol message; returns the bytes sent down."""
        if self.signing_key is not None:
            data = sign_message(data, self.signing_key)
        self.link.publish(topic, data, qos=1)
        return len(data) * recipients

    def serve_one(self, timeout: float) -> None:
        """Take in one message if one arrives within ``timeout`` seconds."""
        try:
            message = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return
        self._handle(message)

    def _drain(self, seconds: float) -> None:
        """Keep acknowledging (and counting) what still arrives for a moment after the last round."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.serve_one(0.1)

    # ------------------------------------------------------------------------------ screening
    def _handle(self, message: Message) -> None:
        try:
            self._screen(message)
        except Rejected as rej:
            self.engine.reject(rej.reason)
            log.warning("rejected message on %s (%s): %s", message.topic, rej.reason, rej.detail)
            if self.cfg.observer:
                self.cfg.observer.rejected(self.link, self.round, message.topic, rej.reason, rej.detail)
        finally:
            self.link.ack(message)

    def _screen(self, message: Message) -> None:
        try:
            topic = parse_topic(message.topic)
        except ValueError as exc:
            raise Rejected("bad_topic", str(exc)) from exc
        if topic.kind == "status":
            self._note_status(topic.device, message.payload)
            return
        if topic.kind != "update":
            return
        self.engine.round_counts["bytes_received"] += len(message.payload)
        if topic.device not in self.cfg.devices:
            raise Rejected("unknown_device", f"{topic.device!r} is not registered in fleet {self.cfg.fleet}")
        self.mode.screen_update(self, topic, message.payload)

    def verified(self, device: str, data: bytes) -> bytes:
        """``data`` without its signature, verified with ``device``'s registered key (unsigned fleets: as is).
        Raises WireError for a bad signature, Rejected for a device without a key."""
        if self.cfg.device_keys is None:
            return data
        if device not in self.cfg.device_keys:
            raise Rejected("unknown_device", f"no public key registered for {device}")
        return verify_message(data, self.cfg.device_keys[device])

    def check_sender(self, device: str, header: Header) -> None:
        """The message's header must name this fleet and the device's registered wire id."""
        if header.fleet_id != fleet_id(self.cfg.fleet):
            raise Rejected("wrong_fleet", f"fleet id {header.fleet_id:#x} is not {self.cfg.fleet}'s")
        if header.device_id != self.cfg.devices[device]:
            raise Rejected("device_mismatch", f"{device} sent device id {header.device_id}, registered "
                                              f"{self.cfg.devices[device]}")

    def _accept(self, device: str, round_: int, update: ClientUpdate) -> None:
        update = self.engine.accept(device, round_, update)
        self._save_update(device, update)
        self._save()
        log.debug("round %d: accepted %s (%d examples)", self.round, device, update.num_examples)

    def _note_status(self, device: str, payload: bytes) -> None:
        if not payload:
            return
        try:
            _, status = decode_status(payload)
        except WireError as exc:
            raise Rejected("bad_status", f"status of {device}: {exc}") from exc
        self.status[device] = status
        declined = status.get("declined_round")
        if isinstance(declined, int) and self.engine.decline(device, declined):
            log.warning("round %d: %s declined (%s); not waiting for it", self.round, device, status.get("reason"))

    # ------------------------------------------------------------------------------ closing a round
    def _close_round(self) -> None:
        accepted = list(self.accepted)  # the engine forgets them when it closes the round
        combined, extra = self.mode.close(self)
        counts = self.engine.round_counts
        transport = {"bytes_received": counts["bytes_received"], "model_bytes": self._model_bytes,
                     "bytes_down": self._model_bytes * len(self.selected),
                     "quorum_met": counts["rounds_below_quorum"] == 0,
                     "seconds": time.monotonic() - self._round_started}
        row = self.engine.close_round(combined, {**transport, **extra})
        if self.cfg.observer:
            self.cfg.observer.closed(self.link, row, self.cfg.strategy, accepted, self.strategy.privacy_budget())
        self._save()
        self._write_metrics()
        if self.on_round:
            self.on_round(row)

    # ------------------------------------------------------------------------------ persistence
    def _save(self) -> None:
        manifest = {"fleet": self.cfg.fleet, "strategy": self.cfg.strategy, **self.engine.manifest(),
                    "state_keys": self.engine.state_keys()}  # accepted updates: each in its own file (_save_update)
        checkpoint.save(self.checkpoint_path, manifest, self.engine.arrays())
        self._prune_accepted()

    def _round_dir(self) -> Path:
        """Where the current round's accepted updates are kept."""
        return self.run_dir / ACCEPTED_DIR / f"round{self.round}"

    def _accepted_path(self, device: str) -> Path:
        return self._round_dir() / f"{device}.npz"

    def _save_update(self, device: str, update: ClientUpdate) -> None:
        """An accepted update goes to disk once, in its own file, before its acknowledgement: rewriting every
        accepted delta at each acceptance cost O(n²) bytes a round (20 GB for 1,000 devices of 20 kB)."""
        checkpoint.save(self._accepted_path(device),
                        {"num_examples": update.num_examples, "local_steps": update.local_steps, "meta": update.meta},
                        {"delta": update.delta, "control": update.control_delta})

    def _load_update(self, device: str) -> ClientUpdate:
        meta, arrays = checkpoint.load(self._accepted_path(device))
        return ClientUpdate(device, arrays["delta"], meta["num_examples"], meta["local_steps"], arrays.get("control"),
                            meta["meta"])

    def _prune_accepted(self) -> None:
        """Drop the files of closed rounds (the checkpoint no longer names them)."""
        root = self.run_dir / ACCEPTED_DIR
        for folder in root.glob("round*") if root.is_dir() else ():
            if folder != self._round_dir():
                shutil.rmtree(folder, ignore_errors=True)

    def _restore(self) -> bool:
        if not self.checkpoint_path.exists():
            return False
        manifest, arrays = checkpoint.load(self.checkpoint_path)
        if (manifest["fleet"], manifest["strategy"]) != (self.cfg.fleet, self.cfg.strategy):
            raise checkpoint.CheckpointError(
                f"{self.checkpoint_path} belongs to fleet {manifest['fleet']!r} with {manifest['strategy']}, not "
                f"{self.cfg.fleet!r} with {self.cfg.strategy}; use another run directory or delete it")
        self.engine.round = manifest["round"]  # where the accepted updates' files are
        self.engine.restore(manifest, arrays, {device: self._load_update(device) for device in manifest["accepted"]})
        return True

    def _write_metrics(self) -> None:
        (self.run_dir / "rounds.json").write_text(json.dumps(self.history, indent=1) + "\n")
        fairness = self.engine.book.fairness()  # how often each device was chosen (rows carry the summary)
        (self.run_dir / "selection.json").write_text(json.dumps({**fairness.summary(), "rounds": fairness.rounds,
                                                                 "counts": fairness.counts}, indent=1) + "\n")
        scalar = [k for k in self.history[0] if not isinstance(self.history[0][k], dict)]
        with open(self.run_dir / "rounds.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(scalar + ["rejected"])
            for row in self.history:
                writer.writerow([row.get(k) for k in scalar] + [json.dumps(row["rejected"], sort_keys=True)])

