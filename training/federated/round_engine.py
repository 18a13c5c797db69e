"""The round logic of federated training, once: what the MQTT aggregator and the in-process simulation share.

A round is opened (devices selected; a strategy with a privacy budget may stop the run here), updates are
accepted one by one through the same screen (stale, future, duplicate, not selected, wrong shape, NaN), and
the round is closed: outliers dropped, the strategy aggregates, the model is evaluated, the best round kept,
and one history row written with whatever the strategy's privacy ledger says. The engine has no transport
and no clock of its own: the aggregator service feeds it what arrives over MQTT, the simulation what its
devices return, and both checkpoint it through ``manifest``/``arrays``/``restore``.

How updates are combined is the engine's ``mode``: the strategy on individual updates, or (secure
aggregation) the strategy on the one decoded sum that ``training.federated.secagg_round`` hands in; then
only norm bounds enforced on the device apply, and the outlier screen has nothing to screen.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any, Callable

import numpy as np

from training.federated.aggregator_config import RoundPolicy
from training.federated.robust import delta_norm
from training.federated.strategies import ClientUpdate, InvalidUpdate, RoundContext, Strategy, Weights, validate_update

log = logging.getLogger(__name__)

Evaluator = Callable[[Weights], dict[str, float]]


class Rejected(Exception):
    """An update (or message) that cannot enter the round; ``reason`` is the short code it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class RoundEngine:
    """One federated run's state and rules. ``devices``: registered device names."""

    def __init__(self, strategy: Strategy, devices: list[str], policy: RoundPolicy, rounds: int,
                 initial_weights: Weights, seed: int = 0, evaluate: Evaluator | None = None,
                 select_on: str = "val_macro_f1") -> None:
        self.strategy, self.devices, self.policy = strategy, sorted(devices), policy
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

    # ------------------------------------------------------------------------------ opening
    def select(self, status: dict[str, dict] | None = None, withdrawn: frozenset[str] = frozenset()) -> list[str]:
        """The round's devices under the policy; ``status``: what devices last reported (capabilities, state);
        ``withdrawn``: devices whose patient refused training, never selected."""
        status = status or {}
        trainable = [d for d in self.devices if "train" in status.get(d, {}).get("capabilities", ["train"])
                     and d not in withdrawn]
        if not trainable:
            log.warning("round %d: no device may train (inference-only or consent withdrawn)", self.round)
            return []
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

    def context(self) -> RoundContext:
        """The public facts of the current round. Every selection here is published on the bus: no amplification."""
        return RoundContext(self.round, len(self.devices), len(self.selected))

    def open_round(self, status: dict[str, dict] | None = None, withdrawn: frozenset[str] = frozenset()) -> bool:
        """Select the round's devices; False (and nothing selected) when the strategy's budget forbids the round."""
        self.selected = self.select(status, withdrawn)
        if not self.strategy.allows_round(self.context()):
            log.warning("round %d would exceed the privacy budget; stopping after %d round(s)", self.round,
                        self.round - 1)
            self.selected = []
            self.rounds, self.budget_stopped = self.round - 1, True
            return False
        self.round_counts = Counter()
        return True

    # ------------------------------------------------------------------------------ collecting
    def accept(self, device: str, round_: int, update: ClientUpdate) -> ClientUpdate:
        """Screen one update; returns it as it enters the round (a late one down-weighted), or raises Rejected."""
        if round_ > self.round:
            raise Rejected("future_round", f"{device} sent round {round_} during round {self.round}")
        if (round_, device) in self.recent or (round_ == self.round and device in self.accepted):
            raise Rejected("duplicate", f"{device}'s round-{round_} update was already accepted")
        staleness = self.round - round_
        if staleness == 0 and device not in self.selected:
            raise Rejected("not_selected", f"{device} was not selected for round {round_}")
        if staleness > 0:
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
        self.accepted[device] = update
        self.recent.add((round_, device))
        return update

    def reject(self, reason: str) -> None:
        """Count a rejection (total and this round's)."""
        self.rejected[reason] += 1
        self.round_counts[f"rejected_{reason}"] += 1

    def decline(self, device: str) -> bool:
        """A selected device said it cannot deliver this round; True if that is news."""
        if device not in self.selected or device in self.accepted or device in self.declined:
            return False
        self.declined.add(device)
        return True

    def answered(self) -> int:
        """Selected devices that delivered or declined."""
        return sum(1 for d in self.selected if d in self.accepted or d in self.declined)

    def delivered(self) -> int:
        return sum(1 for d in self.selected if d in self.accepted)

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
        updates = self.drop_outliers(list(self.accepted.values())) if combined is None else combined
        self.strategy.begin_round(self.context())
        self.weights = self.strategy.aggregate(self.weights, updates)
        metrics = self.evaluate(self.weights) if self.evaluate else {}
        losses = [u.meta["train_loss"] for u in updates if u.meta.get("train_loss") is not None]
        counts = self.round_counts
        row = {"round": self.round, "epoch": self.round, "selected": len(self.selected),
               "participants": self.delivered(),
               "late_accepted": counts["late_accepted"], "declined": len(self.declined),
               "loss": float(np.mean(losses)) if losses else None,
               "rejected": {k.removeprefix("rejected_"): v for k, v in counts.items() if k.startswith("rejected_")},
               **(extra or {}), **metrics}
        if (spent := self.strategy.privacy_row()) is not None:
            row["privacy"] = spent
        self.history.append(row)
        score = metrics.get(self.select_on) if metrics else float(self.round)  # no evaluator: the latest
        if score is not None and score > self.best_score:
            self.best_score, self.best_round = score, self.round
            self.best_weights = [w.copy() for w in self.weights]
        self.recent = {(r, d) for r, d in self.recent if r > self.round - self.policy.max_staleness - 1}
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
                "declined": sorted(self.declined)}

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
        self.weights, self.best_weights = arrays["weights"], arrays["best"]
        self.strategy.load_state({k: arrays.get(f"state.{k}") for k in manifest["state_keys"]})
        self.accepted = dict(accepted)
