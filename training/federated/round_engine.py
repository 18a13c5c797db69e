"""The round logic of federated training, once: what the MQTT aggregator and the in-process simulation share.

A round is opened (devices selected; a strategy with a privacy budget may stop the run here), updates are
accepted one by one through the same screen (stale, future, duplicate, not selected, wrong shape, NaN), and
the round is closed: outliers dropped, the strategy aggregates, the model is evaluated, the best round kept,
and one history row written with whatever the strategy's privacy ledger says. The engine has no transport
and reads time only from the ``clock`` it is given (the aggregator's monotonic clock, the simulation's
virtual one): the aggregator service feeds it what arrives over MQTT, the simulation what its devices
return, both ask ``close_due`` when the round may close, and both checkpoint it through
``manifest``/``arrays``/``restore``.

Synchronous or asynchronous is the strategy's ``buffering`` hook. Synchronous: a round closes when every
selected device answered, or at the policy's deadline with a quorum (one more deadline without it).
Asynchronous (FedBuff): a round is a model version; devices not still training on an earlier version are
selected when it opens, an update is accepted if its version is at most ``max_staleness`` behind and its
device was asked to train on that version (the staleness goes to the strategy in ``meta``), and the round
closes every ``buffer_size`` accepted updates (or at the deadline with what it has). Screening, the outlier
check, the budget stop, evaluation and checkpoints are the same code in both.

Who is selected is ``RoundPolicy.selection``: all, online, a seeded fraction, or a status-fed policy
(``training.federated.selection``) that sees each device's last status and its history in ``DeviceBook``;
every row reports how evenly devices were chosen so far (Jain's index).

How updates are combined is the engine's ``mode``: the strategy on individual updates, or (secure
aggregation) the strategy on the one decoded sum that ``training.federated.secagg_round`` hands in; then
only norm bounds enforced on the device apply, and the outlier screen has nothing to screen.
"""
from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any, Callable

import numpy as np

from training.federated.aggregator_config import RoundPolicy
from training.federated.device_book import DeviceBook
from training.federated.robust import delta_norm
from training.federated.selection import SelectionSpec
from training.federated.strategies import ClientUpdate, InvalidUpdate, RoundContext, Strategy, Weights, validate_update

log = logging.getLogger(__name__)

Evaluator = Callable[[Weights], dict[str, float]]


class Rejected(Exception):
    """An update (or message) that cannot enter the round; ``reason`` is the short code it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class Selection(list):
    """A round's selected devices with O(1) membership: the engine asks ``device in selected`` for every
    update, which on a plain list of 10,000 names costs more than the rest of the update's screen."""

    def __init__(self, names=()) -> None:
        super().__init__(names)
        self._names = frozenset(self)

    def __contains__(self, name: object) -> bool:
        return name in self._names


class RoundEngine:
    """One federated run's state and rules. ``devices``: registered device names."""

    def __init__(self, strategy: Strategy, devices: list[str], policy: RoundPolicy, rounds: int,
                 initial_weights: Weights, seed: int = 0, evaluate: Evaluator | None = None,
                 select_on: str = "val_macro_f1", clock: Callable[[], float] = time.monotonic) -> None:
        self.strategy, self.devices, self.policy = strategy, sorted(devices), policy
        self.buffering = strategy.buffering()  # None: synchronous rounds
        self.selection = SelectionSpec.parse(policy.selection)  # None: all / online / fraction
        self.selector = self.selection.make() if self.selection is not None else None
        self.clock = clock
        self.opened_at = clock()
        self._extended = False  # the round's deadline was extended once for want of a quorum
        self.close_reason: str | None = None
        #: Asynchronous rounds: device -> the version it was asked to train on and has not delivered yet.
        self.in_flight: dict[str, int] = {}
        self.book = DeviceBook(self.devices)
        self._seconds: dict[str, float] = {}  # this round's arrival times (not checkpointed)
        self.rounds, self.seed = rounds, seed
        self.budget_stopped = False  # the strategy's budget ended the run (sticky across restarts)
        self.evaluate, self.select_on = evaluate, select_on
        self.weights = [np.asarray(w, np.float32) for w in initial_weights]
        self.best_weights = [w.copy() for w in self.weights]
        self.round, self.best_round, self.best_score = 1, 0, -math.inf
        self.selected: list[str] = []
        self.accepted: dict[str, ClientUpdate] = {}
        self.declined: set[str] = set()  # selected devices that said they cannot deliver this round
        self.recent: set[tuple[int, str]] = set()  # (round, device) accepted lately: duplicates of these are dropped
        self.history: list[dict] = []
        self.rejected: Counter[str] = Counter()
        self.round_counts: Counter[str] = Counter()

    @property
    def finished(self) -> bool:
        return self.round > self.rounds

    @property
    def staleness_limit(self) -> int:
        return self.buffering.max_staleness if self.buffering is not None else self.policy.max_staleness

    # ------------------------------------------------------------------------------ opening
    def select(self, status: dict[str, dict] | None = None, withdrawn: frozenset[str] = frozenset()) -> list[str]:
        """The round's devices under the policy; ``status``: what devices last reported (capabilities, state);
        ``withdrawn``: devices whose patient refused training, never selected."""
        status = status or {}
        trainable = [d for d in self.devices if "train" in status.get(d, {}).get("capabilities", ["train"])
                     and d not in withdrawn and d not in self.in_flight]
        if not trainable:
            if self.buffering is None or not self.in_flight:
                log.warning("round %d: no device may train (inference-only, consent withdrawn or busy)", self.round)
            return []
        if self.selector is not None:
            return self.selector.select(self._statuses(trainable, status), self.selection.size(len(trainable)),
                                        self.round, self.seed)
        kind, _, arg = self.policy.selection.partition(":")
        if kind == "online":
            online = [d for d in trainable if status.get(d, {}).get("state") == "online"]
            if online:
                return online
            log.warning("round %d: no device reported online yet; selecting all", self.round)
        if kind == "fraction":
            rng = np.random.default_rng([self.seed, self.round])  # the same choice after a restart
            n = max(1, round(float(arg) * len(trainable)))
            return sorted(rng.choice(trainable, n, replace=False).tolist())
        return trainable

    def _statuses(self, names: list[str], status: dict[str, dict]) -> list:
        """Each device's policy view; a malformed status is counted and logged, the device judged on defaults."""
        out = []
        for name in names:
            try:
                out.append(self.book.status_of(name, status.get(name)))
            except ValueError as exc:
                self.reject("bad_status")
                log.warning("round %d: status of %s unusable for selection (%s); using defaults", self.round,
                            name, exc)
                out.append(self.book.status_of(name, {"state": status[name].get("state", "online")}))
        return out

    def context(self) -> RoundContext:
        """The public facts of the current round. Every selection here is published on the bus: no amplification.
        An asynchronous round aggregates a buffer of a fixed, public size: that is its ``selected``."""
        selected = self.buffering.buffer_size if self.buffering is not None else len(self.selected)
        return RoundContext(self.round, len(self.devices), selected)

    def open_round(self, status: dict[str, dict] | None = None, withdrawn: frozenset[str] = frozenset()) -> bool:
        """Select the round's devices; False (and nothing selected) when the strategy's budget forbids the round."""
        if self.buffering is not None:  # devices whose version got too old to be accepted are free again
            self.in_flight = {d: v for d, v in self.in_flight.items() if v >= self.round - self.staleness_limit}
        self.selected = self.select(status, withdrawn)
        if not self.strategy.allows_round(self.context()):
            log.warning("round %d would exceed the privacy budget; stopping after %d round(s)", self.round,
                        self.round - 1)
            self.selected = []
            self.rounds, self.budget_stopped = self.round - 1, True
            return False
        self.round_counts = Counter()
        if self.buffering is not None:
            self.in_flight.update({d: self.round for d in self.selected})
        self.book.chose(self.selected, self.round)
        self.opened_at, self._extended, self.close_reason = self.clock(), False, None
        return True

    # ------------------------------------------------------------------------------ collecting
    def accept(self, device: str, round_: int, update: ClientUpdate) -> ClientUpdate:
        """Screen one update; returns it as it enters the round (a late one down-weighted), or raises Rejected."""
        if round_ > self.round:
            raise Rejected("future_round", f"{device} sent round {round_} during round {self.round}")
        if (round_, device) in self.recent or (round_ == self.round and device in self.accepted):
            raise Rejected("duplicate", f"{device}'s round-{round_} update was already accepted")
        staleness = self.round - round_
        if self.buffering is not None:
            update = self._screen_buffered(device, round_, staleness, update)
        elif staleness == 0 and device not in self.selected:
            raise Rejected("not_selected", f"{device} was not selected for round {round_}")
        elif staleness > 0:
            weight = self.policy.late_weight
            if weight is None or staleness > self.policy.max_staleness or device in self.accepted:
                raise Rejected("late", f"{device}'s round-{round_} update arrived in round {self.round}")
            update = ClientUpdate(device, update.delta, max(1, round(update.num_examples * weight ** staleness)),
                                  update.local_steps, update.control_delta, {**update.meta, "staleness": staleness})
            self.round_counts["late_accepted"] += 1
        try:
            validate_update(self.weights, update)
        except InvalidUpdate as exc:
            raise Rejected(exc.reason, str(exc)) from exc
        self.in_flight.pop(device, None)
        self.accepted[device] = update
        self.recent.add((round_, device))
        if staleness == 0:  # Oort's round time; the book itself changes only when a round closes (checkpoint size)
            self._seconds[device] = self.clock() - self.opened_at
        return update

    def _screen_buffered(self, device: str, round_: int, staleness: int, update: ClientUpdate) -> ClientUpdate:
        """Asynchronous rounds: an update of a version not too old, from a device asked to train on it."""
        if staleness > self.staleness_limit:
            raise Rejected("stale", f"{device}'s version-{round_} update is {staleness} versions old "
                                    f"(limit {self.staleness_limit})")
        if self.in_flight.get(device) != round_:
            raise Rejected("not_selected", f"{device} was not asked to train on version {round_}")
        if staleness:
            self.round_counts["late_accepted"] += 1
        return ClientUpdate(device, update.delta, update.num_examples, update.local_steps, update.control_delta,
                            {**update.meta, "staleness": staleness})

    def reject(self, reason: str) -> None:
        """Count a rejection (total and this round's)."""
        self.rejected[reason] += 1
        self.round_counts[f"rejected_{reason}"] += 1

    def decline(self, device: str, round_: int | None = None) -> bool:
        """A device said it cannot deliver round ``round_`` (default: the current one); True if that is news.
        Asynchronous rounds free the device for the next version."""
        round_ = self.round if round_ is None else round_
        if self.buffering is not None:
            if self.in_flight.get(device) != round_:
                return False
            del self.in_flight[device]
            self.declined.add(device)
            return True
        if round_ != self.round or device not in self.selected or device in self.accepted or device in self.declined:
            return False
        self.declined.add(device)
        return True

    def answered(self) -> int:
        """Selected devices that delivered or declined (asynchronous: updates in the buffer)."""
        if self.buffering is not None:
            return len(self.accepted)
        return sum(1 for d in self.selected if d in self.accepted or d in self.declined)

    def delivered(self) -> int:
        if self.buffering is not None:
            return len(self.accepted)
        return sum(1 for d in self.selected if d in self.accepted)

    # ------------------------------------------------------------------------------ when to close
    def buffer_full(self) -> bool:
        """Asynchronous rounds: the buffer holds its K updates (O(1); a batch of messages stops here, so a
        version never takes more than K)."""
        return self.buffering is not None and len(self.accepted) >= self.buffering.buffer_size

    @property
    def extended(self) -> bool:
        """The round's first deadline passed below the quorum and it waits one more: the service's cue to
        announce the round again for any selected device that missed the model."""
        return self._extended

    def close_due(self) -> str | None:
        """Why the round closes now (by the engine's clock); None: keep collecting. Asynchronous: the buffer
        is full, or the deadline passed. Synchronous: every selected device answered (or the quorum is in and
        the policy does not wait for all), or the deadline passed with a quorum, or a second deadline without."""
        elapsed, p = self.clock() - self.opened_at, self.policy
        if self.buffering is not None:
            if self.buffer_full():
                return self._closing("buffer_full")
            return self._closing("deadline") if elapsed >= p.deadline_s else None
        need, have = max(1, math.ceil(p.quorum * len(self.selected))), self.delivered()
        if self.answered() == len(self.selected) or (not p.wait_for_all and have >= need):
            if have < need:
                self.round_counts["rounds_below_quorum"] += 1
            return self._closing("answered")
        if elapsed < p.deadline_s:
            return None
        if have >= need:
            log.info("round %d: deadline with %d/%d updates (quorum %d): closing", self.round, have,
                     len(self.selected), need)
            return self._closing("deadline")
        if elapsed < 2 * p.deadline_s:
            if not self._extended:
                log.warning("round %d: deadline with %d/%d updates, below the quorum of %d; waiting one more "
                            "deadline", self.round, have, len(self.selected), need)
                self._extended = True
            return None
        log.warning("round %d: closing below quorum with %d update(s)", self.round, have)
        self.round_counts["rounds_below_quorum"] += 1
        return self._closing("below_quorum")

    def _closing(self, reason: str) -> str:
        self.close_reason = reason
        return reason

    def next_deadline(self) -> float:
        """The clock time at which ``close_due`` may say yes with no further update (a virtual clock jumps there)."""
        first = self.opened_at + self.policy.deadline_s
        return first if self.buffering is not None or self.clock() < first else first + self.policy.deadline_s

    # ------------------------------------------------------------------------------ closing
    def drop_outliers(self, updates: list[ClientUpdate]) -> list[ClientUpdate]:
        """Drop updates longer than ``max_norm_ratio`` × the round's median norm (needs >= 3 updates)."""
        ratio = self.policy.max_norm_ratio
        if ratio is None or len(updates) < 3:
            return updates
        norms = [delta_norm(u.delta) for u in updates]
        limit = ratio * float(np.median(norms))
        kept = []
        for u, norm in zip(updates, norms):
            if norm > limit:
                self.reject("outlier_norm")
                log.warning("round %d: dropped %s's update, norm %.3g > %g x the median %.3g", self.round, u.device,
                            norm, ratio, limit / ratio)
            else:
                kept.append(u)
        return kept

    def close_round(self, combined: list[ClientUpdate] | None = None, extra: dict[str, Any] | None = None) -> dict:
        """Aggregate, evaluate, keep the best, write the round's row and move to the next round.

        ``combined``: what the strategy aggregates when it is not the accepted updates (secure aggregation's
        decoded mean, which needs no outlier screen: it is one vector); ``extra``: the transport's row fields
        (they override the engine's, e.g. the participants of a secure sum)."""
        for u in self.accepted.values():
            self.book.took(u, self._seconds.get(u.device))
        self._seconds = {}
        updates = self.drop_outliers(list(self.accepted.values())) if combined is None else combined
        self.strategy.begin_round(self.context())
        self.weights = self.strategy.aggregate(self.weights, updates)
        metrics = self.evaluate(self.weights) if self.evaluate else {}
        losses = [u.meta["train_loss"] for u in updates if u.meta.get("train_loss") is not None]
        counts = self.round_counts
        row = {"round": self.round, "epoch": self.round, "selected": len(self.selected),
               "participants": self.delivered(),
               "late_accepted": counts["late_accepted"], "declined": len(self.declined),
               "loss": float(np.mean(losses)) if losses else None, "closed_by": self.close_reason,
               "rejected": {k.removeprefix("rejected_"): v for k, v in counts.items() if k.startswith("rejected_")},
               "fairness": self.book.fairness().summary(), **(extra or {}), **metrics}
        if self.buffering is not None:
            stale = [int(u.meta.get("staleness", 0)) for u in self.accepted.values()]
            row["buffer"] = {"size": self.buffering.buffer_size, "in_flight": len(self.in_flight),
                             "staleness_mean": float(np.mean(stale)) if stale else None,
                             "staleness_max": max(stale, default=None)}
        if (spent := self.strategy.privacy_row()) is not None:
            row["privacy"] = spent
        self.history.append(row)
        score = metrics.get(self.select_on) if metrics else float(self.round)  # no evaluator: the latest
        if score is not None and score > self.best_score:
            self.best_score, self.best_round = score, self.round
            self.best_weights = [w.copy() for w in self.weights]
        self.recent = {(r, d) for r, d in self.recent if r > self.round - self.staleness_limit - 1}
        self.round += 1
        self.selected, self.accepted, self.declined = [], {}, set()
        return row

    # ------------------------------------------------------------------------------ checkpoints
    def manifest(self) -> dict[str, Any]:
        """The engine's JSON-able state; the accepted updates themselves are the caller's to store."""
        return {"round": self.round, "rounds": self.rounds, "budget_stopped": self.budget_stopped,
                "selected": self.selected, "best_round": self.best_round,
                "best_score": None if math.isinf(self.best_score) else self.best_score,
                "recent": sorted(self.recent), "history": self.history, "rejected": dict(self.rejected),
                "round_counts": dict(self.round_counts), "accepted": sorted(self.accepted),
                "declined": sorted(self.declined), "in_flight": self.in_flight, "devices": self.book.to_json()}

    def arrays(self) -> dict[str, list | None]:
        state = self.strategy.state()
        return {"weights": self.weights, "best": self.best_weights, **{f"state.{k}": v for k, v in state.items()}}

    def state_keys(self) -> list[str]:
        return sorted(self.strategy.state())

    def restore(self, manifest: dict[str, Any], arrays: dict[str, list], accepted: dict[str, ClientUpdate]) -> None:
        self.round, self.selected = manifest["round"], list(manifest["selected"])
        if manifest.get("budget_stopped"):  # a spent budget stays spent; otherwise a restart may extend the run
            self.rounds, self.budget_stopped = min(self.rounds, manifest["rounds"]), True
        self.best_round = manifest["best_round"]
        self.best_score = -math.inf if manifest["best_score"] is None else manifest["best_score"]
        self.recent = {(int(r), str(d)) for r, d in manifest["recent"]}
        self.history, self.rejected = manifest["history"], Counter(manifest["rejected"])
        self.round_counts = Counter(manifest["round_counts"])
        self.declined = set(manifest.get("declined", []))
        self.in_flight = {str(d): int(v) for d, v in manifest.get("in_flight", {}).items()}
        self.book.load_json(manifest.get("devices", {}))
        self.opened_at, self._extended = self.clock(), False  # a resumed round waits a full deadline again
        self.weights, self.best_weights = arrays["weights"], arrays["best"]
        self.strategy.load_state({k: arrays.get(f"state.{k}") for k in manifest["state_keys"]})
        self.accepted = dict(accepted)
