"""The aggregator: a long-running MQTT service that runs federated rounds.

Each round it selects devices, publishes the global model with the round plan (retained, so a device
that connects late still gets it), collects updates until every selected device reported, or until
the deadline with a quorum, aggregates with a pluggable strategy, evaluates, checkpoints and goes on.

Every received message goes through one screening path; anything that cannot enter the aggregate
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
import math
import queue
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from broker.chunking import Reassembler
from broker.device_messages import decode_status
from broker.fed_messages import GlobalModel, RoundPlan, decode_update, encode_global, fleet_id
from broker.mqtt_link import Message, MqttLink
from broker.signing import sign_message, verify_message
from broker.topics import FleetTopics, parse_topic
from broker.wire import Kind, WireError, decode_header
from training.federated import checkpoint
from training.federated.aggregator_config import AggregatorConfig
from training.federated.privacy import latest_ledger_row
from training.federated.registry import make_fleet_strategy
from training.federated.robust import delta_norm
from training.federated.strategies import (ClientUpdate, InvalidUpdate, Scaffold, Strategy, Weights,
                                           validate_update)

log = logging.getLogger(__name__)

Evaluator = Callable[[Weights], dict[str, float]]
CHECKPOINT_FILE = "aggregator.npz"
#: The current round's accepted updates, one file each: ``accepted/round{r}/{device}.npz``.
ACCEPTED_DIR = "accepted"


@dataclass
class AggregationResult:
    final_weights: Weights
    best_weights: Weights
    best_round: int
    history: list[dict]
    rejected: dict[str, int]


class Aggregator:
    def __init__(self, cfg: AggregatorConfig, initial_weights: Weights, broker_url: str, run_dir: Path,
                 evaluate: Evaluator | None = None, on_round: Callable[[dict], None] | None = None,
                 select_on: str = "val_macro_f1", signing_key: Any = None) -> None:
        self.cfg = cfg
        self.topics = FleetTopics(cfg.fleet)
        self.run_dir = Path(run_dir)
        self.evaluate, self.on_round, self.select_on = evaluate, on_round, select_on
        self.signing_key = signing_key  # Ed25519 private key: global models go out signed
        self.strategy: Strategy = make_fleet_strategy(cfg.strategy, cfg.strategy_args, len(cfg.devices))
        self.weights = [np.asarray(w, np.float32) for w in initial_weights]
        self.best_weights = [w.copy() for w in self.weights]
        self.round, self.best_round, self.best_score = 1, 0, -math.inf
        self.selected: list[str] = []
        self.accepted: dict[str, ClientUpdate] = {}
        self.declined: set[str] = set()  # selected devices that said they cannot deliver this round
        self.recent: set[tuple[int, str]] = set()  # (round, device) accepted lately: duplicates of these are dropped
        self.history: list[dict] = []
        self.rejected: Counter[str] = Counter()
        self._round_counts: Counter[str] = Counter()
        self.status: dict[str, dict] = {}
        self._inbox: queue.Queue[Message] = queue.Queue()
        self._reassembler = Reassembler()
        self._round_started = time.monotonic()
        self._model_bytes = 0
        self.link = MqttLink(broker_url, f"pw-{cfg.fleet}-aggregator",
                             [self.topics.all_updates(), self.topics.all_statuses()], self._inbox.put,
                             manual_ack=True)

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    # ------------------------------------------------------------------------------ the service
    def run(self) -> AggregationResult:
        resumed = self._restore()
        self.link.start()
        if resumed:
            log.info("resuming round %d with %d accepted update(s) from %s", self.round, len(self.accepted),
                     self.checkpoint_path)
        while self.round <= self.cfg.rounds:
            if not self.selected:
                self.selected = self._select()
                if not self._privacy_allows(len(self.selected)):
                    break
                self._round_counts = Counter()
                self._save()
                if self.cfg.observer:
                    self.cfg.observer.opened(self.link, self.round, self.cfg.strategy, self.selected, self.cfg.rounds)
            self._announce()
            self._collect()
            self._close_round()
        self._announce(final=True)
        self._drain(seconds=0.5)
        self.link.stop()
        return AggregationResult(self.weights, self.best_weights, self.best_round, self.history, dict(self.rejected))

    def _select(self) -> list[str]:
        trainable = [d for d in sorted(self.cfg.devices)
                     if "train" in self.status.get(d, {}).get("capabilities", ["train"])]
        kind, _, arg = self.cfg.policy.selection.partition(":")
        if kind == "online":
            online = [d for d in trainable if self.status.get(d, {}).get("state") == "online"]
            if online:
                return online
            log.warning("round %d: no device reported online yet; selecting all", self.round)
        if kind == "fraction":
            rng = np.random.default_rng([self.cfg.seed, self.round])  # the same choice after a restart
            n = max(1, round(float(arg) * len(trainable)))
            return sorted(rng.choice(trainable, n, replace=False).tolist())
        return trainable

    def _privacy_allows(self, participants: int) -> bool:
        """A DP strategy with a budget: stop before the round that would exceed (ε, δ)."""
        within = getattr(self.strategy, "within_budget", None)
        if within is None or within(participants):
            return True
        log.warning("round %d would exceed the privacy budget ε = %s; stopping after %d rounds", self.round,
                    getattr(self.strategy, "epsilon_budget", None), self.round - 1)
        self.selected = []
        return False

    def _plan(self, final: bool = False) -> RoundPlan:
        local = {**self.cfg.local, **self.strategy.client_config()}
        return RoundPlan(self.round, () if final else tuple(self.selected), local, self.cfg.encoding,
                         self.cfg.chunk_size, final)

    def _announce(self, final: bool = False) -> None:
        control = self.strategy.server_control(self.weights) if isinstance(self.strategy, Scaffold) else None
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

    def _collect(self) -> None:
        policy = self.cfg.policy
        need = max(1, math.ceil(policy.quorum * len(self.selected)))
        deadline, extended = time.monotonic() + policy.deadline_s, False
        while True:
            have = sum(1 for d in self.selected if d in self.accepted)
            answered = have + len(self.declined - set(self.accepted))
            if answered == len(self.selected) or (not policy.wait_for_all and have >= need):
                if have < need:
                    self._round_counts["rounds_below_quorum"] += 1
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if have >= need:
                    log.info("round %d: deadline with %d/%d updates (quorum %d): closing", self.round, have,
                             len(self.selected), need)
                    return
                if not extended:
                    log.warning("round %d: deadline with %d/%d updates, below the quorum of %d; waiting one "
                                "more deadline", self.round, have, len(self.selected), need)
                    deadline, extended = deadline + policy.deadline_s, True
                    continue
                log.warning("round %d: closing below quorum with %d update(s)", self.round, have)
                self._round_counts["rounds_below_quorum"] += 1
                return
            try:
                message = self._inbox.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            self._handle(message)

    def _drain(self, seconds: float) -> None:
        """Keep acknowledging (and counting) what still arrives for a moment after the last round."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self._handle(self._inbox.get(timeout=0.1))
            except queue.Empty:
                pass

    # ------------------------------------------------------------------------------ screening
    def _handle(self, message: Message) -> None:
        try:
            self._screen(message)
        except _Rejected as rej:
            self.rejected[rej.reason] += 1
            self._round_counts[f"rejected_{rej.reason}"] += 1
            log.warning("rejected message on %s (%s): %s", message.topic, rej.reason, rej.detail)
            if self.cfg.observer:
                self.cfg.observer.rejected(self.link, self.round, message.topic, rej.reason, rej.detail)
        finally:
            self.link.ack(message)

    def _screen(self, message: Message) -> None:
        try:
            topic = parse_topic(message.topic)
        except ValueError as exc:
            raise _Rejected("bad_topic", str(exc)) from exc
        if topic.kind == "status":
            self._note_status(topic.device, message.payload)
            return
        if topic.kind != "update":
            return
        self._round_counts["bytes_received"] += len(message.payload)
        device = topic.device
        if device not in self.cfg.devices:
            raise _Rejected("unknown_device", f"{device!r} is not registered in fleet {self.cfg.fleet}")
        try:
            header, _ = decode_header(message.payload, allow_signed=True)
            data = message.payload
            if header.kind == Kind.CHUNK:
                data = self._reassembler.feed(message.payload)
                if data is None:
                    return
            if self.cfg.device_keys is not None:
                if device not in self.cfg.device_keys:
                    raise _Rejected("unknown_device", f"no public key registered for {device}")
                data = verify_message(data, self.cfg.device_keys[device])
            header, update = decode_update(data)
        except WireError as exc:
            raise _Rejected(exc.reason, str(exc)) from exc
        if header.fleet_id != fleet_id(self.cfg.fleet):
            raise _Rejected("wrong_fleet", f"fleet id {header.fleet_id:#x} is not {self.cfg.fleet}'s")
        if header.device_id != self.cfg.devices[device]:
            raise _Rejected("device_mismatch", f"{device} sent device id {header.device_id}, registered "
                                               f"{self.cfg.devices[device]}")
        if header.round != topic.round:
            raise _Rejected("round_mismatch", f"topic round {topic.round}, header round {header.round}")
        self._accept(device, header.round, ClientUpdate(device, update.delta, update.num_examples,
                                                        update.local_steps, update.control_delta,
                                                        {"train_loss": update.train_loss}))

    def _accept(self, device: str, round_: int, update: ClientUpdate) -> None:
        if round_ > self.round:
            raise _Rejected("future_round", f"{device} sent round {round_} during round {self.round}")
        if (round_, device) in self.recent or (round_ == self.round and device in self.accepted):
            raise _Rejected("duplicate", f"{device}'s round-{round_} update was already accepted")
        staleness = self.round - round_
        if staleness == 0 and device not in self.selected:
            raise _Rejected("not_selected", f"{device} was not selected for round {round_}")
        if staleness > 0:
            weight = self.cfg.policy.late_weight
            if weight is None or staleness > self.cfg.policy.max_staleness or device in self.accepted:
                raise _Rejected("late", f"{device}'s round-{round_} update arrived in round {self.round}")
            update = ClientUpdate(device, update.delta, max(1, round(update.num_examples * weight ** staleness)),
                                  update.local_steps, update.control_delta, {**update.meta, "staleness": staleness})
            self._round_counts["late_accepted"] += 1
        try:
            validate_update(self.weights, update)
        except InvalidUpdate as exc:
            raise _Rejected(exc.reason, str(exc)) from exc
        self.accepted[device] = update
        self.recent.add((round_, device))
        self._save_update(device, update)
        self._save()
        log.debug("round %d: accepted %s (%d examples)", self.round, device, update.num_examples)

    def _note_status(self, device: str, payload: bytes) -> None:
        if not payload:
            return
        try:
            _, status = decode_status(payload)
        except WireError as exc:
            raise _Rejected("bad_status", f"status of {device}: {exc}") from exc
        self.status[device] = status
        if status.get("declined_round") == self.round and device in self.selected and device not in self.accepted:
            if device not in self.declined:
                log.warning("round %d: %s declined (%s); not waiting for it", self.round, device, status.get("reason"))
            self.declined.add(device)

    # ------------------------------------------------------------------------------ closing a round
    def _drop_outliers(self, updates: list[ClientUpdate]) -> list[ClientUpdate]:
        ratio = self.cfg.policy.max_norm_ratio
        if ratio is None or len(updates) < 3:
            return updates
        norms = [delta_norm(u.delta) for u in updates]
        limit = ratio * float(np.median(norms))
        kept = []
        for u, norm in zip(updates, norms):
            if norm > limit:
                self.rejected["outlier_norm"] += 1
                self._round_counts["rejected_outlier_norm"] += 1
                log.warning("round %d: dropped %s's update, norm %.3g > %g x the median %.3g", self.round, u.device,
                            norm, ratio, limit / ratio)
            else:
                kept.append(u)
        return kept

    def _close_round(self) -> None:
        updates = self._drop_outliers(list(self.accepted.values()))
        self.weights = self.strategy.aggregate(self.weights, updates)
        metrics = self.evaluate(self.weights) if self.evaluate else {}
        losses = [u.meta["train_loss"] for u in updates if u.meta.get("train_loss") is not None]
        counts = self._round_counts
        row = {"round": self.round, "epoch": self.round, "selected": len(self.selected),
               "participants": sum(1 for d in self.selected if d in self.accepted),
               "late_accepted": counts["late_accepted"], "declined": len(self.declined),
               "loss": float(np.mean(losses)) if losses else None,
               "bytes_received": counts["bytes_received"], "model_bytes": self._model_bytes,
               "bytes_down": self._model_bytes * len(self.selected),
               "quorum_met": counts["rounds_below_quorum"] == 0,
               "rejected": {k.removeprefix("rejected_"): v for k, v in counts.items() if k.startswith("rejected_")},
               "seconds": time.monotonic() - self._round_started, **metrics}
        if (spent := latest_ledger_row(self.strategy)) is not None:
            row["privacy"] = spent
        self.history.append(row)
        if self.cfg.observer:
            self.cfg.observer.closed(self.link, row, self.cfg.strategy, list(self.accepted),
                                     getattr(self.strategy, "epsilon_budget", None))
        score = metrics.get(self.select_on) if metrics else float(self.round)  # no evaluator: the latest
        if score is not None and score > self.best_score:
            self.best_score, self.best_round = score, self.round
            self.best_weights = [w.copy() for w in self.weights]
        self.recent = {(r, d) for r, d in self.recent if r > self.round - self.cfg.policy.max_staleness - 1}
        self.round += 1
        self.selected, self.accepted, self.declined = [], {}, set()
        self._save()
        self._write_metrics()
        if self.on_round:
            self.on_round(row)

    # ------------------------------------------------------------------------------ persistence
    def _save(self) -> None:
        state = self.strategy.state()
        manifest = {
            "fleet": self.cfg.fleet, "strategy": self.cfg.strategy, "round": self.round,
            "selected": self.selected, "best_round": self.best_round,
            "best_score": None if math.isinf(self.best_score) else self.best_score,
            "recent": sorted(self.recent), "history": self.history, "rejected": dict(self.rejected),
            "round_counts": dict(self._round_counts), "state_keys": sorted(state),
            "accepted": sorted(self.accepted),  # each in its own file, written once by _save_update
        }
        arrays: dict[str, list | None] = {"weights": self.weights, "best": self.best_weights}
        arrays.update({f"state.{k}": v for k, v in state.items()})
        checkpoint.save(self.checkpoint_path, manifest, arrays)
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
        self.round, self.selected = manifest["round"], list(manifest["selected"])
        self.best_round = manifest["best_round"]
        self.best_score = -math.inf if manifest["best_score"] is None else manifest["best_score"]
        self.recent = {(int(r), str(d)) for r, d in manifest["recent"]}
        self.history, self.rejected = manifest["history"], Counter(manifest["rejected"])
        self._round_counts = Counter(manifest["round_counts"])
        self.weights, self.best_weights = arrays["weights"], arrays["best"]
        self.strategy.load_state({k: arrays.get(f"state.{k}") for k in manifest["state_keys"]})
        self.accepted = {device: self._load_update(device) for device in manifest["accepted"]}
        return True

    def _write_metrics(self) -> None:
        (self.run_dir / "rounds.json").write_text(json.dumps(self.history, indent=1) + "\n")
        scalar = [k for k in self.history[0] if not isinstance(self.history[0][k], dict)]
        with open(self.run_dir / "rounds.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(scalar + ["rejected"])
            for row in self.history:
                writer.writerow([row.get(k) for k in scalar] + [json.dumps(row["rejected"], sort_keys=True)])


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail
