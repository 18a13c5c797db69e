"""A device's side of a secure-aggregation round over MQTT (Bonawitz et al. 2017, four steps).

When a round plan carries ``local["secagg"]`` (``broker.secagg_messages.SecAggPlan``) the device does not
send its update; it takes part in the protocol instead, each step a signed SECAGG message on its update
topic, each answer from the aggregator on the round's secagg topics (signed by the aggregator, except ADVERTS and
SHARES_FOR in consistency rounds, whose content is authenticated end to end: ``authenticates``):

1. on the global model: ADVERT its two X25519 public keys (and start training);
2. on ADVERTS (the keys of everyone who advertised): SHARES, its Shamir shares encrypted to each peer;
3. on SHARES_FOR (the ciphertexts addressed to it; their senders are the round's survivors) and once its
   training is done: MASKED_INPUT, its update clipped, noised (distributed DP) and masked;
4. on UNMASK_REQUEST (who sent an input, who did not): UNMASK, the shares that let the aggregator remove the
   self masks of the first and the pairwise masks of the second, never both for one device.

SecAgg+ (``edge_runtime.secagg_plus``): a plan with ``degree`` k makes steps 2-4 run on the round's masking
graph (shares to and masks with the k neighbours only); a plan with ``consistency`` adds a round before step
4: on CONFIRM_REQUEST the device signs the survivor list (once per session) and it unmasks only for an
UNMASK_REQUEST that lists the same survivors with enough valid signatures (the devices' Ed25519 keys).

``SecAggParticipant`` holds the per-round state and is transport-free: it returns the payloads to send,
and ``DeviceClient`` frames, signs and publishes them.

A restarted aggregator resumes its round under a new session number (its protocol state is not on disk):
the device then rejoins, with fresh keys and masks, but with the update it already prepared (``begin``
says which privacy rules that follows); it never trains twice for one round.
"""
from __future__ import annotations

import logging
import math
import secrets
import threading
from dataclasses import dataclass, field, replace

import numpy as np
from cryptography.exceptions import InvalidTag

from broker.secagg_messages import (
    END_TO_END_STEPS,
    AdvertList,
    Confirmation,
    ConfirmRequest,
    EncryptedShares,
    MaskedInput,
    Payload,
    SecAggMessage,
    SecAggPlan,
    SharesFor,
    Step,
    UnmaskRequest,
)
from edge_runtime.dp_noise import NoiseSource
from edge_runtime.secagg_plus import (
    ConsistencyCheck,
    InconsistentRound,
    advert_message,
    advert_signed_by,
    graph_for,
)
from edge_runtime.secure_aggregation import FixedPoint, SecAggDevice

log = logging.getLogger(__name__)


def prepare_input(flat: np.ndarray, plan: SecAggPlan, rng: NoiseSource, sampled: bool = True) -> np.ndarray:
    """What a device contributes to the sum: clipped to L2 norm C and with its share of the DP noise; a device
    that its own coin left out of the round (``sampled`` False) contributes zeros with the same noise, so that
    its masked input looks like everyone else's."""
    x = np.asarray(flat, np.float64) if sampled else np.zeros(np.shape(flat))
    if plan.clip is not None:
        norm = float(np.linalg.norm(x))
        if norm > plan.clip:
            x = x * (plan.clip / norm)
    if plan.noise_sd > 0:
        x = x + rng.normal(0.0, plan.noise_sd, size=x.shape)
    return x


@dataclass(frozen=True)
class _Prepared:
    """An update as it enters the sum, with what its privacy rests on: the clip it was clipped to, the noise
    it carries (``noise_sd`` per coordinate), and whether an unmask request listed it (then the aggregator
    may already hold a sum that contains it)."""

    vector: np.ndarray
    clip: float | None
    noise_sd: float
    in_a_sum: bool = False


@dataclass
class _Session:
    round: int
    plan: SecAggPlan
    core: SecAggDevice
    survivors: list[int] | None = None
    prepared: _Prepared | None = None
    #: Why the prepared update must not enter this session's sum (None: it may).
    withheld: str | None = None
    steps_sent: set[Step] = field(default_factory=set)


class SecAggParticipant:
    """One device's secure-aggregation sessions (one per round; older rounds are forgotten)."""

    def __init__(self, device_id: int, rng: NoiseSource, signing_key=None,
                 directory: dict | None = None) -> None:
        """``signing_key``: this device's Ed25519 key; ``directory``: wire id -> Ed25519 public key of every
        device (the consistency check of SecAgg+ needs both; without them this device cannot confirm)."""
        self.device_id, self._rng = device_id, rng
        self._signing_key, self._directory = signing_key, directory
        self._lock = threading.Lock()
        self._session: _Session | None = None
        #: Sessions rejoined with an update this device would not send (see ``begin``).
        self.declined = 0
        #: Advert lists refused because they were not this device's neighbourhood (``_share``).
        self.refused = 0

    def session_of(self, round_: int) -> int | None:
        """The session this device takes part in for ``round_`` (None: none)."""
        with self._lock:
            s = self._session
            return s.plan.session if s is not None and s.round == round_ else None

    def authenticates(self, round_: int, msg: SecAggMessage) -> bool:
        """Whether this device may take ``msg`` without the aggregator's signature: an ADVERTS or SHARES_FOR
        (``END_TO_END_STEPS``) of its current session, in a consistency round that this device itself checks (it
        verifies every neighbour's advert signature and unmasks only with the signed survivor list). Everything
        it uses from such a message is authenticated by another device; the round's parameters, the step
        sequence and the survivor lists still come signed by the aggregator."""
        with self._lock:
            s = self._session
            return (s is not None and s.round == round_ and s.plan.session == msg.session
                    and msg.step in END_TO_END_STEPS and s.core.consistency is not None)

    def withheld(self, round_: int) -> str | None:
        """Why the current session of ``round_`` will get no masked input from this device (None: it will)."""
        with self._lock:
            s = self._session
            return s.withheld if s is not None and s.round == round_ else None

    def begin(self, round_: int, plan: SecAggPlan) -> tuple[int, int, Payload]:
        """A new session: fresh keys and masks, and the ADVERT to send (round, session, payload).

        A new session for the round of the current one is a restarted aggregator's: the update already
        prepared (clipped and noised) for the round carries over instead of being trained or noised again
        (``set_update`` of a training still running lands in the new session anyway). The privacy rules:

        - never a second independent noise sample for the same update: two noisy copies of it reveal more
          than one (their mean has half the noise variance);
        - a plan with more noise tops the update up with N(0, new² − old²), so that it carries exactly the
          new plan's N(0, new²) (Gaussians add); less noise than the update carries is kept as it is;
        - a plan with another clip gets no input: re-clipping a noised update breaks the DP analysis, which
          assumes the noise is added after clipping;
        - an update that an unmask request listed gets no input either: the aggregator may already hold
          that sum, and a second sum over other devices with the same update would reveal it by difference.
        A withheld input is logged and counted in ``declined``; the device still advertises, so that the
        round does not wait for it, and its peers' masks towards it are removed as for a dropout.
        """
        check = None
        if plan.consistency:
            if self._signing_key is None or not self._directory:
                log.warning("device %d: round %d asks for the consistency check but this device has no signing key "
                            "or peer directory; it will not confirm", self.device_id, round_)
            else:
                check = ConsistencyCheck(self.device_id, plan.session, self._signing_key, self._directory,
                                         plan.consistency)
        core = SecAggDevice(self.device_id, plan.threshold, FixedPoint(plan.bound, plan.scale, plan.devices),
                            consistency=check)
        new = _Session(round_, plan, core, steps_sent={Step.ADVERT})
        with self._lock:
            old = self._session
            if old is not None and old.round == round_ and old.prepared is not None:
                self._carry_over(old.prepared, new)
            self._session = new
        advert = core.advertise()
        if check is not None:  # the active-adversary rounds: keys signed end to end, checked by the neighbours
            advert = replace(advert, signature=self._signing_key.sign(
                advert_message(plan.session, advert.device, advert.cipher_pk, advert.mask_pk)))
        return round_, plan.session, advert

    def _carry_over(self, prepared: _Prepared, new: _Session) -> None:
        """The round's prepared update into ``new``: topped up to its plan's noise, or withheld (``begin``)."""
        new.withheld = _why_withheld(prepared, new.plan)
        if new.withheld is not None:
            self.declined += 1
            log.warning("device %d: round %d: rejoining session %#x without an input: %s", self.device_id,
                        new.round, new.plan.session, new.withheld)
        elif new.plan.noise_sd > prepared.noise_sd:
            top_up = math.sqrt(new.plan.noise_sd ** 2 - prepared.noise_sd ** 2)
            prepared = replace(prepared, vector=prepared.vector + self._rng.normal(0.0, top_up, prepared.vector.shape),
                               noise_sd=new.plan.noise_sd)
        new.prepared = prepared

    def set_update(self, round_: int, flat: np.ndarray) -> list[tuple[int, int, Payload]]:
        """The trained update (flattened); returns the MASKED_INPUT if the shares are already in."""
        with self._lock:
            s = self._session
            if s is None or s.round != round_:
                raise RuntimeError(f"no secure-aggregation session for round {round_}")
            sampled = s.plan.sampling_rate >= 1.0 or private_coin(s.plan.sampling_rate)
            s.prepared = _Prepared(prepare_input(flat, s.plan, self._rng, sampled), s.plan.clip, s.plan.noise_sd)
            return self._input_if_ready(s)

    def on_message(self, round_: int, msg: SecAggMessage) -> list[tuple[int, int, Payload]]:
        """What to send in answer to one aggregator message of this round (nothing for stale ones)."""
        with self._lock:
            s = self._session
            if s is None or s.round != round_ or s.plan.session != msg.session:
                return []
            p = msg.payload
            if isinstance(p, AdvertList) and Step.SHARES not in s.steps_sent:
                return self._share(s, p)
            if isinstance(p, SharesFor) and p.recipient == self.device_id and s.survivors is None:
                received = []
                for sender, blob in p.frm.items():
                    try:
                        s.core.receive_shares([EncryptedShares(sender, {self.device_id: blob})])
                        received.append(sender)
                    except (InvalidTag, KeyError, ValueError):
                        log.warning("device %d: round %d: the share from %d does not decrypt; ignoring it",
                                    self.device_id, s.round, sender)
                s.survivors = sorted(set(p.frm) | {self.device_id})
                return self._input_if_ready(s)
            if isinstance(p, ConfirmRequest) and Step.CONFIRM not in s.steps_sent and Step.MASKED_INPUT in s.steps_sent:
                if s.core.consistency is None or not self._plausible(s, p.arrived, ()):
                    return []
                if self.device_id in p.arrived:  # from here on the aggregator may hold a sum with our update
                    s.prepared = replace(s.prepared, in_a_sum=True)
                s.steps_sent.add(Step.CONFIRM)
                return [(s.round, s.plan.session, Confirmation(self.device_id, s.core.confirm(list(p.arrived))))]
            if isinstance(p, UnmaskRequest) and Step.UNMASK not in s.steps_sent and Step.MASKED_INPUT in s.steps_sent:
                if self.device_id in p.arrived:  # from here on the aggregator may hold a sum with our update
                    s.prepared = replace(s.prepared, in_a_sum=True)
                if not self._plausible(s, p.arrived, p.dropped):
                    log.warning("device %d: round %d: refusing an unmask request that lists %d arrived of %d "
                                "survivors (threshold %d)", self.device_id, s.round, len(p.arrived),
                                len(s.survivors or []), s.plan.threshold)
                    return []
                try:
                    reply = s.core.unmask(list(p.arrived), list(p.dropped), p.signatures)
                except InconsistentRound as exc:
                    log.warning("device %d: round %d: refusing to unmask: %s", self.device_id, s.round, exc)
                    return []
                s.steps_sent.add(Step.UNMASK)
                return [(s.round, s.plan.session, reply)]
            return []

    def _share(self, s: _Session, p: AdvertList) -> list[tuple[int, int, Payload]]:
        """SHARES for the round's adverts, once this device has checked them against its own neighbourhood.

        The masking graph is a public function of the signed round plan (the selected devices and the
        session seed), so the device derives its neighbours itself rather than trusting whose keys it was
        sent: under SecAgg+ the aggregator sends each device only its advertised neighbours' adverts with the
        list of advertisers, and a list that adds a non-neighbour or leaves out a neighbour that advertised is
        refused (nothing is shared); a neighbour that did not advertise is a dropout. With the
        consistency check (the active-adversary rounds) every key it will use must carry its own device's
        signature (``advert_message``): an aggregator cannot put keys of its own in a neighbour's place. The consistency
        check then binds the advertiser list too (``ConsistencyCheck.advertisers``): no device unmasks unless
        enough devices saw the same list, hence the same graph."""
        everyone = p.devices or tuple(a.device for a in p.adverts)
        sent = {a.device for a in p.adverts}
        if self.device_id not in everyone:
            return []
        graph = graph_for(list(s.plan.members), s.plan.degree, s.plan.session)
        if graph is not None and self.device_id not in s.plan.members:
            return []
        near = (graph.neighbours(self.device_id) & set(everyone) if graph is not None
                else set(everyone) - {self.device_id})
        problem = None if graph is None else _not_neighbourhood(near, sent, set(everyone), bool(p.devices),
                                                                 self.device_id)
        if problem is None and s.core.consistency is not None:  # the active-adversary rounds: keys signed end to end
            forged = [a.device for a in p.adverts if a.device in near
                      and not advert_signed_by(self._directory, s.plan.session, a)]
            problem = f"the keys of {sorted(forged)[:5]} are not signed by those devices" if forged else None
        if problem is not None:
            self.refused += 1
            log.warning("device %d: round %d: refusing the adverts (%s); sharing nothing", self.device_id, s.round,
                        problem)
            return []
        s.core.graph = graph
        if s.core.consistency is not None:
            s.core.consistency.advertisers = tuple(sorted(everyone))
        s.steps_sent.add(Step.SHARES)
        # its own keys it knows (a per-device list carries only the neighbours'); it holds its own share too
        adverts = [a for a in p.adverts if a.device != self.device_id] + [s.core.advertise()]
        return [(s.round, s.plan.session, s.core.share_keys(adverts))]

    @staticmethod
    def _plausible(s: _Session, arrived, dropped) -> bool:
        """Reveal shares only for a request that can be honest: at least t inputs, ours among them, and every
        listed device this device masked with (all, or its neighbours under SecAgg+) among its survivors."""
        listed = set(arrived) | set(dropped)
        if s.core.graph is not None:
            listed &= s.core.graph.neighbours(s.core.device) | {s.core.device}
        return len(arrived) >= s.plan.threshold and listed <= set(s.survivors or []) and s.core.device in arrived

    def _input_if_ready(self, s: _Session) -> list[tuple[int, int, Payload]]:
        if s.prepared is None or s.survivors is None or s.withheld is not None or Step.MASKED_INPUT in s.steps_sent:
            return []
        if len(s.survivors) < s.plan.threshold:
            log.warning("device %d: round %d: only %d survivors, below the threshold %d; not sending an input",
                        self.device_id, s.round, len(s.survivors), s.plan.threshold)
            return []
        s.steps_sent.add(Step.MASKED_INPUT)
        masked = s.core.masked_input(s.prepared.vector, s.survivors)
        return [(s.round, s.plan.session, MaskedInput(self.device_id, masked.vector))]


def _not_neighbourhood(near: frozenset[int], sent: set[int], everyone: set[int], per_device: bool,
                      me: int) -> str | None:
    """What is wrong with adverts ``sent`` for a device whose neighbours are ``near`` (None: nothing). A
    per-device list must be exactly the neighbours' adverts; the broadcast one (everyone's) must contain them."""
    if not sent <= everyone:
        return f"adverts of devices outside the advertiser list: {sorted(sent - everyone)[:5]}"
    if not near <= sent:
        return f"the adverts of neighbours {sorted(near - sent)[:5]} are missing"
    if per_device and not sent - {me} <= near:
        return f"adverts of non-neighbours {sorted(sent - near - {me})[:5]}"
    return None


def _why_withheld(prepared: _Prepared, plan: SecAggPlan) -> str | None:
    """Why an update prepared in an earlier session of the round must not enter ``plan``'s sum (None: it may)."""
    if prepared.in_a_sum:
        return "an earlier session's unmask request listed this update: a second sum could reveal it"
    if prepared.clip != plan.clip:
        return f"the clip changed from {prepared.clip} to {plan.clip}: re-clipping a noised update breaks DP"
    return None


def private_coin(probability: float) -> bool:
    """True with ``probability``, from the operating system's entropy: never from a seeded generator, whose
    draws the aggregator could predict (amplification by sampling rests on no one knowing the outcome). The
    device trains either way, so the time its masked input takes does not tell the outcome either."""
    return secrets.SystemRandom().random() < probability


def flatten(delta: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(d, np.float64).ravel() for d in delta]) if delta else np.zeros(0)


def noise_sd(noise_multiplier: float, clip: float, threshold: int) -> float:
    """Each device's noise so that any t of them together carry N(0, (z·C)²) on the sum."""
    return noise_multiplier * clip / math.sqrt(threshold)

