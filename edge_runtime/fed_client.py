"""A device's side of federated rounds over MQTT.

The client subscribes to the fleet's global models, trains when the round plan selects it, and
publishes its delta (QoS 1, chunked when the plan asks). Training runs on an executor, never on the
MQTT network thread, so keepalives continue during a long local epoch. Lossy encodings keep what the
encoding dropped as error feedback and add it to the next round's delta (Seide et al. 2014,
Stich et al. 2018), which is what lets top-k deltas converge.

Local differential privacy (``edge_runtime.local_dp``): a device configured with ``local_dp``, or a round
plan whose ``local`` settings carry ``"local_dp": {...}``, clips and noises its delta before it leaves (the
stronger of the two settings wins: a plan can add noise, never remove it), keeps its own ε ledger over the
rounds it sent, reports it in its status and declines a round that would exceed its budget. With a
``state_dir`` the ledger is durable (``edge_runtime.ledger_store``): restored on start, each release committed
before the update leaves, and a device whose ledger was lost declines every round until it is reset.

The trainer is a small interface: ``training.federated.device_trainer`` implements it with
TensorFlow; a device without a trainer (the light LiteRT install) announces itself as inference-only
and is never selected for training.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from broker.chunking import split_message
from broker.device_messages import encode_status
from broker.fed_messages import (
    GlobalModel,
    LocalUpdate,
    RoundPlan,
    UpdateEncoding,
    decode_global,
    encode_update,
    fleet_id,
    roundtrip_delta,
)
from broker.mqtt_link import BrokerSettings, Message, MqttLink, Will
from broker.secagg_messages import SecAggPlan, decode_secagg, encode_secagg
from broker.signing import is_signed, sign_message, verify_message
from broker.topics import FleetTopics, parse_topic
from broker.wire import WireError
from edge_runtime.dp_noise import make_noise
from edge_runtime.ledger_store import LedgerStore
from edge_runtime.local_dp import LocalDP, PrivacyLedger
from edge_runtime.secagg_client import SecAggParticipant, flatten

log = logging.getLogger(__name__)
#: Round-plan ``local`` entries that are the device client's business, not the trainer's.
PRIVACY_KEYS = ("local_dp", "secagg")


class RoundDeclined(RuntimeError):
    """A device's own reason not to take part in a round (no budget, no labels, no consent): it tells the
    aggregator and logs one line, without a traceback."""


class PrivacyBudgetExhausted(RoundDeclined):
    """The round would take this device's ε past its budget: it declines instead of training."""


class LocalUpdater(Protocol):
    def fit(self, model: GlobalModel) -> LocalUpdate:
        """Train from ``model.weights`` with ``model.plan.local`` settings; return the delta."""


@dataclass
class _Pending:
    """The last update sent: kept until the broker acknowledged every frame."""

    round: int
    frames: list[tuple[str, bytes]]
    infos: list = field(default_factory=list)
    resent: bool = False

    def acknowledged(self) -> bool:
        return bool(self.infos) and all(_is_acked(i) for i in self.infos)


def _is_acked(info) -> bool:
    """paho raises instead of answering False for a message queued while offline."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


class DeviceClient:
    def __init__(self, name: str, device_id: int, fleet: str, broker_url: BrokerSettings | str, updater: LocalUpdater | None,
                 executor: Executor | None = None, signing_key: Any = None, aggregator_key: Any = None,
                 local_dp: LocalDP | None = None, noise_seed: int | None = None,
                 state_dir: Path | None = None, peer_keys: dict[int, Any] | None = None,
                 consent: Any = None) -> None:
        self.name, self.device_id = name, device_id
        #: The wearer's consent (``edge_runtime.consent_gate.ConsentGate``): without training consent the device
        #: declines every round. None: no consent records in this fleet.
        self.consent = consent
        self.topics = FleetTopics(fleet)
        self.updater = updater
        #: Ed25519 keys: this device's private key signs its updates; the aggregator's public key must have
        #: signed every global model this device trains on (None: unsigned fleet).
        self.signing_key, self.aggregator_key = signing_key, aggregator_key
        #: Local DP of this device (None: only what a round plan asks for).
        self.local_dp = local_dp
        #: The device's durable storage (beside its alert spool): the ledger survives restarts there.
        self.ledger_store = LedgerStore(state_dir, local_dp.delta if local_dp else 1e-6) if state_dir else None
        self.privacy = self.ledger_store.ledger if self.ledger_store else PrivacyLedger(
            local_dp.delta if local_dp else 1e-6)
        #: Every DP draw of this device (local DP, distributed-DP shares): ChaCha20 keyed by the OS
        #: (``edge_runtime.dp_noise``), unless ``noise_seed`` asks for the predictable seeded source (tests and
        #: simulations: warned, and its status says so).
        self.noise = make_noise() if noise_seed is None else make_noise("seeded", noise_seed, where=f"device {name}")
        #: ``peer_keys``: wire id -> Ed25519 public key of every device (SecAgg+'s consistency check).
        self.secagg = SecAggParticipant(device_id, self.noise, signing_key, peer_keys)
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix=f"train-{name}")
        self._own_executor = executor is None
        self._lock = threading.Lock()
        self._latest_round = 0
        self._working_on: int | None = None
        self._pending: _Pending | None = None
        self._residual: list[np.ndarray] | None = None
        self.rounds_sent: list[int] = []
        self.errors = 0
        self.finished = threading.Event()
        offline = encode_status(fleet, device_id, {"state": "offline"})
        self.link = MqttLink(broker_url, f"pw-{fleet}-{name}", [self.topics.all_globals(), *self.topics.secagg_for(name)],
                             self._on_message,
                             on_connect=self._on_connect, will=Will(self.topics.status(name), offline))

    @property
    def capabilities(self) -> list[str]:
        return ["train"] if self.updater is not None else []

    def start(self, wait: bool = True) -> None:
        """Connect; ``wait=False`` for a device that must keep classifying while the broker is away."""
        self.link.start(wait=wait)

    def stop(self) -> None:
        self._publish_status("offline")
        self.link.stop()
        if self.ledger_store is not None:
            self.ledger_store.close()
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- network thread
    def _on_connect(self, session_present: bool) -> None:
        self._publish_status("online")
        with self._lock:
            pending = self._pending
            if pending is None or pending.acknowledged() or pending.resent:
                return
            pending.resent = True
        log.info("%s: re-sending the unacknowledged update of round %d once", self.name, pending.round)
        pending.infos = [self.link.publish(t, p, qos=1) for t, p in pending.frames]

    def _verified(self, payload: bytes) -> bytes:
        """The aggregator's message without its signature; a device with the aggregator's key takes nothing unsigned."""
        return verify_message(payload, self.aggregator_key) if self.aggregator_key else payload

    def _on_message(self, msg: Message) -> None:
        try:
            kind = parse_topic(msg.topic).kind
            if kind == "secagg" and msg.payload:
                return self._on_secagg(msg)
            if kind != "global" or not msg.payload:
                return  # an empty retained payload clears an old round
            _, model = decode_global(self._verified(msg.payload))
        except (ValueError, WireError) as exc:
            self.errors += 1
            log.warning("%s: ignoring a bad global model on %s: %s", self.name, msg.topic, exc)
            return
        self._on_global(model)

    def _on_global(self, model: GlobalModel) -> None:
        """Train on a round that selects this device, once; a round it already joined is only rejoined."""
        plan = model.plan
        with self._lock:
            if plan.round < self._latest_round:
                return
            self._latest_round = plan.round
            if plan.final:
                self.finished.set()
                return
            if self.updater is None or self.name not in plan.selected:
                return
            joined = plan.round == self._working_on or plan.round in self.rounds_sent
            if not joined:
                self._working_on = plan.round
        if joined:
            return self._rejoin_secagg(plan)
        if plan.local.get("secagg"):
            secagg = self._secagg_plan(plan)
            if secagg is None:
                with self._lock:
                    self._working_on = None
                return
            self._send_secagg([self.secagg.begin(plan.round, secagg)])
        self._executor.submit(self._train_and_send, model)

    def _secagg_plan(self, plan: RoundPlan) -> SecAggPlan | None:
        """The round's secure-aggregation plan; None, logged and counted, when it is unusable."""
        try:
            return SecAggPlan.from_dict(plan.local["secagg"])
        except ValueError as exc:
            self.errors += 1
            log.warning("%s: round %d: unusable secure-aggregation plan: %s", self.name, plan.round, exc)
            return None

    def _rejoin_secagg(self, plan: RoundPlan) -> None:
        """The plan of a round this device already trains for (or sent). The same plan again (a retained
        message after a reconnect) changes nothing; a new secure-aggregation session is a restarted
        aggregator's, which lost the round's protocol state: advertise in it so that the round can complete,
        with the update already trained (``SecAggParticipant.begin``), never training twice."""
        current = self.secagg.session_of(plan.round)
        if current is None or not plan.local.get("secagg"):
            return
        secagg = self._secagg_plan(plan)
        if secagg is None or secagg.session == current:
            return
        log.info("%s: round %d: the aggregator restarted the round's secure aggregation; rejoining", self.name,
                 plan.round)
        self._send_secagg([self.secagg.begin(plan.round, secagg)])
        if (reason := self.secagg.withheld(plan.round)) is not None:
            # a declined round: the aggregator stops waiting for this device's masked input
            self._publish_status("online", declined_round=plan.round, reason=reason[:200])

    def _on_secagg(self, msg: Message) -> None:
        try:
            if self.aggregator_key and not is_signed(msg.payload):  # only for what is authenticated end to end
                header, message = decode_secagg(msg.payload)
                if not self.secagg.authenticates(header.round, message):
                    raise WireError("unsigned", f"an unsigned {message.step.name} outside a consistency round")
            else:
                header, message = decode_secagg(self._verified(msg.payload))
        except (ValueError, WireError) as exc:
            self.errors += 1
            log.warning("%s: ignoring a bad secure-aggregation message on %s: %s", self.name, msg.topic, exc)
            return
        if header.fleet_id != fleet_id(self.topics.fleet):
            return
        try:
            self._send_secagg(self.secagg.on_message(header.round, message))
        except Exception:  # a step that fails must not stop the MQTT network thread; the round goes on without us
            self.errors += 1
            log.exception("%s: round %d: secure-aggregation step %s failed", self.name, header.round, message.step.name)

    def _send_secagg(self, outgoing: list) -> None:
        for round_, session, payload in outgoing:
            data = encode_secagg(fleet_id(self.topics.fleet), round_, session, payload)
            if self.signing_key is not None:
                data = sign_message(data, self.signing_key)
            self.link.publish(self.topics.update(round_, self.name), data, qos=1)

    # ---------------------------------------------------------------- executor thread
    def _train_and_send(self, model: GlobalModel) -> None:
        plan = model.plan
        try:
            if self.consent is not None and not self.consent.allows_training():
                self._publish_status("online", declined_round=plan.round, reason="no training consent")
                return
            encoding = UpdateEncoding.parse(plan.encoding)
            if self.ledger_store is not None:
                self.ledger_store.require_intact()  # a device that forgot what it released trains no more
            dp = self._local_dp_for(plan.local)
            if dp is not None and dp.epsilon_budget is not None and self.privacy.epsilon_if(dp) > dp.epsilon_budget:
                raise PrivacyBudgetExhausted(f"epsilon {self.privacy.epsilon_if(dp):.3f} would exceed the budget "
                                             f"{dp.epsilon_budget}")
            update = self.updater.fit(without_privacy_keys(model))
            if dp is not None:
                update = self._privatize(update, dp, plan.round)
            if plan.local.get("secagg"):  # the delta goes into the masked sum, never out on its own
                self._send_secagg(self.secagg.set_update(plan.round, flatten(update.delta)))
                with self._lock:
                    self.rounds_sent.append(plan.round)
                self._publish_status("online")
                return
            update = self._with_error_feedback(update, encoding)
            message = encode_update(self.topics.fleet, plan.round, self.device_id, update, encoding)
            if self.signing_key is not None:
                message = sign_message(message, self.signing_key)
            frames = (split_message(message, plan.round & 0xFFFFFFFF, plan.chunk_size)
                      if plan.chunk_size else [message])
            topic = self.topics.update(plan.round, self.name)
            pending = _Pending(plan.round, [(topic, f) for f in frames])
            with self._lock:
                self._pending = pending
                self.rounds_sent.append(plan.round)
            # outside the lock: paho's network thread takes it in on_connect
            pending.infos = [self.link.publish(t, p, qos=1) for t, p in pending.frames]
            self._publish_status("online")
        except Exception as exc:  # a failed round must not kill the device; it tells the aggregator not to wait
            if isinstance(exc, RoundDeclined):
                log.info("%s: declining round %d: %s", self.name, plan.round, exc)
            else:
                self.errors += 1
                log.exception("%s: local round %d failed", self.name, plan.round)
            self._publish_status("online", declined_round=plan.round, reason=f"{exc.__class__.__name__}: {exc}"[:200])
        finally:
            with self._lock:
                self._working_on = None

    def _local_dp_for(self, local: dict) -> LocalDP | None:
        asked = LocalDP.from_config(local["local_dp"]) if local.get("local_dp") else None
        return self.local_dp.stronger(asked) if self.local_dp is not None else asked

    def _privatize(self, update: LocalUpdate, dp: LocalDP, round_: int) -> LocalUpdate:
        """Clip and noise the delta; from here on everything (error feedback included) is post-processing."""
        if update.control_delta is not None:
            raise ValueError("local DP does not cover SCAFFOLD's control variates; use another strategy")
        noised = dp.privatize(update.delta, self.noise)
        # durable before the update exists outside this function: a crash loses a release never sent, not one sent
        row = self.ledger_store.record(round_, dp) if self.ledger_store else self.privacy.record(round_, dp)
        log.info("%s: round %d released with local DP (z %.2f, C %.3g): epsilon %.3f at delta %g", self.name,
                 round_, dp.noise_multiplier, dp.clip, row["epsilon"], self.privacy.delta)
        return replace(update, delta=noised, train_loss=None)  # the loss is data-dependent too: not released

    def _with_error_feedback(self, update: LocalUpdate, encoding: UpdateEncoding) -> LocalUpdate:
        if not encoding.lossy:
            return update
        corrected = update.delta
        if self._residual is not None and all(r.shape == d.shape for r, d in zip(self._residual, corrected)):
            corrected = [d + r for d, r in zip(corrected, self._residual)]
        sent = roundtrip_delta(corrected, encoding)
        self._residual = [c - s for c, s in zip(corrected, sent)]
        return LocalUpdate(corrected, update.num_examples, update.local_steps, update.control_delta,
                           update.train_loss)

    def _publish_status(self, state: str, **extra) -> None:
        status = {"state": state, "capabilities": self.capabilities,
                  "last_round": self.rounds_sent[-1] if self.rounds_sent else None, "errors": self.errors, **extra}
        if self.consent is not None:  # the aggregator skips devices whose patient withdrew training consent
            status["patient"] = self.consent.patient
        if self.privacy.rows or self.local_dp is not None or self.ledger_store is not None:
            status["privacy"] = {**self.privacy.summary(), "noise": self.noise.label}
            if self.ledger_store is not None:
                status["privacy"].update(ledger="lost" if self.ledger_store.lost else "durable",
                                         resets=len(self.ledger_store.resets))
        self.link.publish(self.topics.status(self.name), encode_status(self.topics.fleet, self.device_id, status),
                          qos=1, retain=True)


def without_privacy_keys(model: GlobalModel) -> GlobalModel:
    """The model as the trainer sees it: the plan's privacy settings are the client's, not the trainer's."""
    if not any(k in model.plan.local for k in PRIVACY_KEYS):
        return model
    local = {k: v for k, v in model.plan.local.items() if k not in PRIVACY_KEYS}
    return replace(model, plan=replace(model.plan, local=local))
