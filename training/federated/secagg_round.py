"""Secure aggregation over MQTT: the aggregator service learns the sum of the round's updates, nothing else.

``SecureAggregation`` is a mode of the aggregator service (same round engine: selection, round plan,
screening, budget, evaluation and checkpoints) whose collection step is the four steps of Bonawitz et al. 2017
(device side:
``edge_runtime.secagg_client``; messages: ``broker.secagg_messages``). Each step waits for every expected
device or the policy's deadline and needs at least t (``threshold``) of them; a device missing from a step
is out of the round from there on. The sum is decoded from fixed point, divided by the number of inputs
(an unweighted mean: sample counts would have to be aggregated securely too) and applied with FedAvg.

Threat model. The aggregator and the broker are honest but curious: they run the protocol as written and
read everything they route. They learn the sum of at least t masked inputs and who took part in each
step, not any individual update: a masked input is uniform in Z_2^32 without the masks, and the shares
they route are AES-GCM ciphertexts between devices. Up to t − 1 devices colluding with the aggregator learn
nothing more. Messages are signed (Ed25519) and bound to fleet, round and the round's session number, so
a forged, altered or replayed step is refused and counted (bad_signature, round_mismatch, stale_session,
duplicate, wrong_step). Not protected without the consistency round: an actively malicious aggregator that
lies about who dropped out to different devices (devices do refuse to unmask for fewer than t inputs or for
devices that were not survivors). With ``SecAggSettings(consistency=True)`` (on by default for SecAgg+) the
devices sign the survivor list (CONFIRM_REQUEST / CONFIRM) and unmask only with enough signatures over the
list they are asked about (``edge_runtime.secagg_plus``). Never protected: Sybil devices (registration is out of band),
and poisoned updates — robust strategies need individual updates, which is what this hides. Under secure
aggregation only FedAvg-style averaging applies; norm clipping on the device bounds each contribution.

SecAgg+ (Bell et al. 2020): ``SecAggSettings(dropout=..., corrupt=...)`` sizes a sparse masking graph from
the fleet (or ``degree=k`` fixes it); devices then share with and mask against their k neighbours only, the
aggregator checks that each device addressed exactly its neighbours, and waits for every confirmed device's
unmask reply (any t replies no longer cover every neighbourhood).

Device-side Poisson sampling (``SecAggSettings(poisson_rate=q)``): every selected device trains and sends a
masked input, but its update is in it only if its own coin (OS entropy) came up, else a zero with the same
noise; the masks hide which. The decoded sum is divided by q · inputs, and the round is charged as a
Poisson-sampled Gaussian with rate q: the one sampling the accountant amplifies.

Restarts. The protocol state is not checkpointed (it holds nothing a restart could not redo): a restarted
aggregator resumes its round from the checkpoint under a new session, and the devices rejoin it with the
update they already prepared, neither training nor drawing noise again. A device whose update an unmask
request already listed (the old sum may be known) or whose plan changed its clip joins without an input, so
a restart after the unmask request costs that round's update but never reveals one by difference.

Distributed DP. With ``noise_multiplier`` z and ``clip`` C every device clips its update to C and adds
N(0, σ_i²) with σ_i = z·C/√t. The sum of n ≥ t inputs then carries N(0, n σ_i²) = N(0, (z_eff·C)²) with
z_eff = z·√(n/t) ≥ z: calibrating to t, the fewest inputs a round can unmask with, means dropouts never
leave less than the planned noise; more survivors add more. No device and not the aggregator ever sees an
update without its noise: the aggregator only sees the noised sum. Each round is accounted as a Gaussian
mechanism on the sum (add/remove-one-device sensitivity C, as DP-FedAvg) with z_eff, composed over rounds
with dp-accounting's RDP and PLD accountants (``training.federated.accountant``), without subsampling
amplification (the selection is public on the bus) unless the devices sample themselves (below). The
ledger is rebuilt from the checkpointed history after a restart. The mean divides the decoded sum by the
number of inputs, which is public (the aggregator sees who sent one) and the same for neighbouring datasets
of a device that sent an input (its value changes, its presence does not); the ε is charged on the sum, and
dividing by a public count is post-processing. The fixed-point rounding (1/scale per coordinate) is
post-processing of the noised values.
"""
from __future__ import annotations

import itertools
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from broker.fed_messages import fleet_id
from broker.secagg_messages import (
    END_TO_END_STEPS,
    PREFIX,
    AdvertList,
    AdvertListEncoder,
    Confirmation,
    ConfirmRequest,
    EncryptedShares,
    KeyAdvert,
    MaskedInput,
    SharesFor,
    Step,
    UnmaskReply,
    UnmaskRequest,
    decode_secagg_body,
    encode_secagg,
    frame_secagg,
)
from broker.secagg_plan import SecAggPlan
from broker.topics import TopicMatch
from broker.wire import HEADER, Kind, WireError
from edge_runtime.secagg_plus import MaskingGraph, graph_for
from edge_runtime.secure_aggregation import FixedPoint, SecAggServer
from training.federated.accountant import (
    Accountant,
    RoundCharge,
    Sampling,
)
from training.federated.aggregator import Aggregator
from training.federated.robust import unflatten
from training.federated.round_engine import Rejected
from training.federated.secagg_coverage import Coverage
from training.federated.secagg_settings import SecAggSettings
from training.federated.strategies import ClientUpdate

log = logging.getLogger(__name__)


@dataclass
class _RoundState:
    plan: SecAggPlan
    step: Step = Step.ADVERT
    adverts: dict[int, KeyAdvert] = field(default_factory=dict)
    shares: dict[int, EncryptedShares] = field(default_factory=dict)
    inputs: dict[int, MaskedInput] = field(default_factory=dict)
    confirms: dict[int, Confirmation] = field(default_factory=dict)
    replies: dict[int, UnmaskReply] = field(default_factory=dict)
    #: SecAgg+: the round's masking graph over the selected devices, from the plan (None: everyone with everyone).
    graph: MaskingGraph | None = None
    arrived: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    total: np.ndarray | None = None
    failed: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    unmask_seconds: float = 0.0
    #: Seconds from the round's start (the global model) until each step was in, and its announcement out.
    step_seconds: dict[str, float] = field(default_factory=dict)
    #: The aggregator process's CPU seconds at the same points (its critical path, apart from waiting).
    step_cpu_seconds: dict[str, float] = field(default_factory=dict)
    selected_ids: frozenset[int] = frozenset()
    #: SecAgg+: per step, how many more repliers each shared device still needs among its neighbours.
    coverage: Coverage | None = None

    def collected(self, step: Step) -> dict:
        return {Step.ADVERT: self.adverts, Step.SHARES: self.shares, Step.MASKED_INPUT: self.inputs,
                Step.CONFIRM: self.confirms, Step.UNMASK: self.replies}[step]

    def steps(self) -> tuple[Step, ...]:
        confirm = (Step.CONFIRM,) if self.plan.consistency else ()
        return (Step.ADVERT, Step.SHARES, Step.MASKED_INPUT, *confirm, Step.UNMASK)

    def recipients(self, device: int) -> set[int]:
        """Whom ``device`` must address its shares to: every other advertiser, or its neighbours (SecAgg+)."""
        if self.graph is None:
            return set(self.adverts) - {device}
        return set(self.graph.neighbours(device)) & self.adverts.keys()


class SecureAggregation:
    """The aggregator service's secure-aggregation mode: masked inputs in, one decoded sum to the engine."""

    def __init__(self, settings: SecAggSettings | None = None) -> None:
        self.settings = settings or SecAggSettings()
        self.state: _RoundState | None = None
        self._state_round = 0
        self._last_session: int | None = None
        self._accountant: Accountant | None = None

    # ------------------------------------------------------------------------------ plan and steps
    def plan_extras(self, service: Aggregator) -> dict[str, Any]:
        if self.state is None or self._state_round != service.round:
            members = tuple(service.cfg.devices[d] for d in service.selected)
            self.state = _RoundState(self.settings.plan(secrets.randbits(64), members))
            # SecAgg+: the graph is a function of the published plan (selection and session) alone
            self.state.graph = graph_for(list(self.state.plan.members), self.state.plan.degree, self.state.plan.session)
            self._state_round = service.round
        return {"secagg": self.state.plan.to_dict()}

    def collect(self, service: Aggregator) -> None:
        st, t = self.state, self.state.plan.threshold
        expected = {service.cfg.devices[d] for d in service.selected}
        st.selected_ids = frozenset(expected)
        opened, cpu_opened = time.monotonic(), time.process_time()
        for step in st.steps():
            st.step = step
            got = self._await(service, step, expected)
            need = st.plan.consistency if step == Step.CONFIRM else t
            if len(got) < need:
                st.failed = f"{step.name}: {len(got)} of {len(expected)} devices, threshold {need}"
                log.warning("round %d: secure aggregation failed at %s", service.round, st.failed)
                return
            expected = set(got)
            st.step_seconds[f"{step.name.lower()}_in"] = round(time.monotonic() - opened, 3)
            st.step_cpu_seconds[f"{step.name.lower()}_in"] = round(time.process_time() - cpu_opened, 3)
            self.announce(service, step)
            st.step_seconds[f"{step.name.lower()}_announced"] = round(time.monotonic() - opened, 3)
        started = time.perf_counter()
        size = int(sum(w.size for w in service.weights))
        server = SecAggServer(t, size, FixedPoint(st.plan.bound, st.plan.scale, st.plan.devices), st.adverts,
                              st.graph)
        try:
            st.total = server.sum(sorted(st.shares), list(st.inputs.values()), list(st.replies.values()))
        except ValueError as exc:  # an unmask reply that does not reconstruct (e.g. a corrupt share)
            st.failed = f"unmasking: {exc}"
        st.unmask_seconds = time.perf_counter() - started
        st.step_seconds["summed"] = round(time.monotonic() - opened, 3)
        st.step_cpu_seconds["summed"] = round(time.process_time() - cpu_opened, 3)

    def announce(self, service: Aggregator, step: Step) -> None:
        """What the aggregator tells the devices once ``step`` is in: the next step's input (the adverts, each
        device's shares, the list of inputs to confirm or unmask, the confirmations)."""
        st = self.state
        if step == Step.ADVERT:
            if st.graph is None:
                self.send(service, AdvertList(tuple(st.adverts[i] for i in sorted(st.adverts))))
                return
            # SecAgg+: each device gets its advertised neighbours' keys only (O(k) down, not O(n)), with the
            # list of advertisers; it derives the graph from the plan itself and checks that these are its
            # neighbours (a neighbour missing from the advertisers is a dropout)
            names, everyone = {v: k for k, v in service.cfg.devices.items()}, tuple(sorted(st.adverts))
            encoder = AdvertListEncoder(st.adverts.values(), everyone)
            for j in everyone:
                self.send_body(service, Step.ADVERTS, encoder.body(sorted(st.adverts.keys() & st.graph.neighbours(j))),
                               names[j])
        elif step == Step.SHARES:
            names = {v: k for k, v in service.cfg.devices.items()}
            inbox: dict[int, dict[int, bytes]] = {j: {} for j in st.shares}
            for i, m in st.shares.items():  # route: every ciphertext addressed to j, from the devices that shared
                for j, blob in m.to.items():
                    if j != i and j in inbox:
                        inbox[j][i] = blob
            for j in sorted(inbox):
                self.send(service, SharesFor(j, dict(sorted(inbox[j].items()))), names[j])
        elif step == Step.MASKED_INPUT:
            st.arrived, st.dropped = tuple(sorted(st.inputs)), tuple(sorted(set(st.shares) - set(st.inputs)))
            self.send(service, ConfirmRequest(st.arrived) if st.plan.consistency
                      else UnmaskRequest(st.arrived, st.dropped))
        elif step == Step.CONFIRM:  # the evidence every device checks before it reveals a share
            signatures = {i: c.signature for i, c in st.confirms.items()}
            self.send(service, UnmaskRequest(st.arrived, st.dropped, signatures))

    def _await(self, service: Aggregator, step: Step, expected: set[int]) -> dict:
        """Serve messages until every expected device's reply to ``step`` is in, the deadline passes, or the
        replies so far are enough. The bookkeeping looks at each new reply once (the replies only grow, in
        arrival order): re-deriving the waiting set per message cost O(n) each, O(n²) a step at 1,000 devices."""
        got = self.state.collected(step)
        deadline = time.monotonic() + service.cfg.policy.deadline_s
        counted = arrived = 0
        while True:
            new = list(itertools.islice(got, counted, None))
            counted += len(new)
            arrived += sum(d in expected for d in new)
            waiting = len(expected) - arrived
            if step == Step.MASKED_INPUT and service.declined:  # a device whose training failed declined: do not
                waiting -= len({service.cfg.devices[d] for d in service.declined} & expected - got.keys())  # wait
            remaining = deadline - time.monotonic()
            if self._enough(step, new, len(got)) or waiting <= 0 or remaining <= 0:
                return got
            service.serve_one(min(remaining, 0.5))

    def _enough(self, step: Step, new: list[int], count: int) -> bool:
        """Whether the ``count`` devices heard from (``new`` among them since the last call) already let the
        round finish, so that waiting for the rest (dropouts) gains nothing: t unmask replies reconstruct every
        secret on the complete graph; under SecAgg+ every shared device needs t repliers among its neighbours
        (and the confirmations the consistency threshold)."""
        st = self.state
        if step not in (Step.UNMASK, Step.CONFIRM):
            return False
        if st.graph is None:
            covered = count >= st.plan.threshold
        else:
            if st.coverage is None or st.coverage.step != step:
                st.coverage = Coverage(step, st.graph, set(st.shares), st.plan.threshold)
            covered = st.coverage.update(new)  # every reply counted once, whatever the answer
        return covered and (step != Step.CONFIRM or count >= st.plan.consistency)

    def send(self, service: Aggregator, payload, device: str | None = None) -> None:
        """Publish one protocol message of the round: to every device, or to ``device`` only."""
        data = encode_secagg(fleet_id(service.cfg.fleet), service.round, self.state.plan.session, payload)
        self._publish(service, data, device, self._signs(Step(PREFIX.unpack_from(data, HEADER.size)[1])))

    def send_body(self, service: Aggregator, step: Step, body: bytes, device: str) -> None:
        """Publish an already-encoded aggregator step body (header device 0) to ``device``."""
        self._publish(service, frame_secagg(fleet_id(service.cfg.fleet), service.round, self.state.plan.session,
                                            step, 0, body), device, self._signs(step))

    def _signs(self, step: Step) -> bool:
        """Whether the aggregator signs its ``step`` message: always, except ADVERTS and SHARES_FOR in consistency
        rounds, whose content the devices authenticate end to end (``END_TO_END_STEPS``): there the aggregator's
        signature proved nothing a device relies on, and cost the aggregator 2n signatures a round."""
        return not (self.state.plan.consistency and step in END_TO_END_STEPS)

    def _publish(self, service: Aggregator, data: bytes, device: str | None, signed: bool = True) -> None:
        topic, recipients = service.topics.secagg(service.round, device), 1 if device else len(service.selected)
        if signed:
            self.state.bytes_down += service.publish(topic, data, recipients)
        else:
            service.link.publish(topic, data, qos=1)
            self.state.bytes_down += len(data) * recipients

    # ------------------------------------------------------------------------------ screening
    def screen_update(self, service: Aggregator, topic: TopicMatch, payload: bytes) -> None:
        st, device = self.state, topic.device
        if st is not None and self._state_round == service.round:
            st.bytes_up += len(payload)
        if self._late(service, topic, payload):
            return  # not verified either: nothing is done with it
        try:
            kind = HEADER.unpack_from(payload)[2] if len(payload) >= HEADER.size else Kind.SECAGG
            if kind != Kind.SECAGG and kind in Kind._value2member_map_:  # the rest is checked as it is verified
                raise Rejected("not_secagg", f"{device} sent a {Kind(kind).name}: this fleet aggregates securely")
            header, msg = decode_secagg_body(*service.screen.verified_parts(device, payload))
        except WireError as exc:
            raise Rejected(exc.reason, str(exc)) from exc
        service.screen.check_sender(device, header)
        if header.round != topic.round or header.round != service.round or st is None:
            raise Rejected("round_mismatch", f"round {header.round} on {topic.device}'s topic during round "
                                             f"{service.round}")
        if msg.session != st.plan.session:
            raise Rejected("stale_session", f"{device}: session {msg.session:#x} is not this round's")
        got = st.collected(msg.step)
        if header.device_id in got:
            raise Rejected("duplicate", f"{device}'s {msg.step.name} was already accepted")
        if msg.step != st.step:
            raise Rejected("wrong_step", f"{device} sent {msg.step.name} during {st.step.name}")
        self._check_payload(service, device, header.device_id, msg.payload)
        got[header.device_id] = msg.payload

    def _late(self, service: Aggregator, topic: TopicMatch, payload: bytes) -> bool:
        """Whether ``payload`` says it is a reply the round no longer needs: a survivor's unmask reply after the
        round closed (its replies covered every secret), or a confirmation once the unmask request is out (it had
        enough). Read from the header and the step prefix, *before* verifying the signature: such a message is
        dropped unread whoever sent it, so checking who did would only cost an Ed25519 verification (at 1,000
        devices about 400 of the round's ~4,400). A message that only claims to be late is dropped just the same;
        one that is not late goes on to be verified and screened in full."""
        if len(payload) < HEADER.size + PREFIX.size:
            return False
        _, _, kind, _, round_, dev_id, *_ = HEADER.unpack_from(payload)
        _, step, session = PREFIX.unpack_from(payload, HEADER.size)
        if kind != Kind.SECAGG or round_ != topic.round or service.cfg.devices.get(topic.device) != dev_id:
            return False
        if step == Step.UNMASK and round_ == service.round - 1:
            return session == self._last_session
        st = self.state
        return (step == Step.CONFIRM and st is not None and round_ == service.round and session == st.plan.session
                and st.step == Step.UNMASK and dev_id in st.inputs)

    def _check_payload(self, service: Aggregator, device: str, dev_id: int, payload) -> None:
        st = self.state
        allowed = {Step.ADVERT: st.selected_ids, Step.SHARES: st.adverts, Step.MASKED_INPUT: st.shares,
                   Step.CONFIRM: st.inputs, Step.UNMASK: st.inputs}[st.step]  # looked up, not copied, per message
        if dev_id not in allowed:
            raise Rejected("not_selected", f"{device} is not part of step {st.step.name}")
        if isinstance(payload, EncryptedShares) and set(payload.to) != st.recipients(dev_id):
            # every survivor must hold a share from every peer it masks with: a device that skipped one would
            # mask against a peer that does not mask back, and the sum would not decode
            raise Rejected("bad_secagg", f"{device} did not address its shares to exactly its advertised peers")
        size = int(sum(w.size for w in service.weights))
        if isinstance(payload, MaskedInput) and payload.vector.size != size:
            raise Rejected("bad_shape", f"{device}: masked input of {payload.vector.size}, model has {size}")

    # ------------------------------------------------------------------------------ closing a round
    def close(self, service: Aggregator) -> tuple[list[ClientUpdate] | None, dict[str, Any]]:
        st = self.state
        self._last_session = st.plan.session
        combined: list[ClientUpdate] = []
        if st.total is not None:
            # a fixed denominator: the inputs (public), times q when devices sampled themselves (their expected
            # share of real updates; who is in it stays hidden)
            mean = unflatten(st.total / (st.plan.sampling_rate * len(st.inputs)), service.weights)
            combined = [ClientUpdate("secure-sum", mean, len(st.inputs), 1)]
        extra: dict[str, Any] = {
            "participants": len(st.inputs) if st.total is not None else 0,
            "secagg": {"threshold": st.plan.threshold, "scale": st.plan.scale, "degree": st.graph.k if st.graph else len(st.adverts) - 1,
                       "consistency": st.plan.consistency, "confirms": len(st.confirms),
                       "adverts": len(st.adverts), "shares": len(st.shares),
                       "inputs": len(st.inputs), "unmask_replies": len(st.replies), "failed": st.failed,
                       "bytes_up": st.bytes_up, "bytes_down": st.bytes_down,
                       "unmask_seconds": round(st.unmask_seconds, 4), "step_seconds": st.step_seconds,
                       "step_cpu_seconds": st.step_cpu_seconds}}
        if self.settings.noise_multiplier > 0 and st.total is not None:
            extra["privacy"] = self._account(service, len(st.inputs), st.plan.threshold)
        return combined, extra

    def _account(self, service: Aggregator, inputs: int, threshold: int) -> dict[str, Any]:
        if self._accountant is None:  # after a restart: the rounds already charged are in the history
            self._accountant = Accountant(self.settings.delta, [
                RoundCharge(h["round"], p["noise_multiplier"], Sampling(p["sampling"]), p["sampling_rate"])
                for h in service.history if (p := h.get("privacy"))])
        z_eff = self.settings.noise_multiplier * math.sqrt(inputs / threshold)
        q = self.state.plan.sampling_rate
        row = self._accountant.charge(RoundCharge(service.round, z_eff, Sampling.DEVICE_POISSON, q) if q < 1
                                      else RoundCharge(service.round, z_eff))
        return {**row, "inputs": inputs, "threshold": threshold, "clip": self.settings.clip, "z_eff": z_eff}


class SecAggAggregator(Aggregator):
    """The aggregator service in secure-aggregation mode (``Aggregator(..., mode=SecureAggregation(settings))``)."""

    def __init__(self, *args, secagg: SecAggSettings | None = None, **kwargs) -> None:
        super().__init__(*args, mode=SecureAggregation(secagg), **kwargs)
        if self.cfg.strategy != "fedavg":
            raise ValueError("secure aggregation reveals only the sum: use the fedavg strategy (robust and DP "
                             "strategies need individual updates; distributed DP is SecAggSettings.noise_multiplier)")
        self.secagg = self.mode.settings

    @property
    def _state(self) -> _RoundState | None:
        """The current round's protocol state (what tests and benches inspect)."""
        return self.mode.state
