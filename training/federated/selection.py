"""Which devices take part in a round: selection policies fed by device statuses (pure functions, no I/O).

A policy sees one ``DeviceStatus`` per known device (parsed from the retained status messages the devices
publish, see ``DeviceStatus.from_status``) and returns the names of at most ``k`` devices for the round.
The shared rules live once in ``SelectionPolicy.select``: a device without consent or offline is never
chosen, fewer eligible devices than ``k`` means all of them, and the draw is seeded by (seed, round) so a
round's choice is reproducible. Each policy overrides only how it weighs or picks devices:

- ``uniform``: every eligible device equally likely (FedAvg's C-fraction sampling).
- ``power-aware``: devices below ``min_battery_pct`` that are not charging are not asked; the others are
  weighted by the energy a round costs them (charging first, then battery, compute class and link).
- ``reliability-weighted``: weight = smoothed share of past selections that delivered an update, raised to
  ``power`` (devices that drop out get asked less, never excluded).
- ``oort``: Oort (Lai et al., OSDI 2021): utility = statistical utility (with an age bonus for devices not
  chosen lately) x system utility ((T / t)^alpha for devices slower than the preferred round time T);
  ``1 - explore`` of the slots go to high-utility devices (sampled within 95 % of the cut-off utility),
  ``explore`` of them to devices never measured, uniformly.

How it plugs in: the round engine's selection step keeps a ``DeviceStatus`` per device from the status
topic and its own delivery history, and calls ``make_policy(name, **args).select(...)`` where it draws the
round's devices today (docs/scale.md).
"""
from __future__ import annotations

import math
from abc import ABC
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

#: Relative speed of local training by compute class (an M4 patch = 1), for the system utility.
COMPUTE_SPEED = {"m4": 1.0, "m7": 2.5, "a53": 10.0}


@dataclass(frozen=True)
class DeviceStatus:
    """What selection knows about one device. ``reliability`` in [0, 1] is the smoothed share of past
    selections that delivered an accepted update (``reliability_from_counts``); ``statistical_utility`` is
    Oort's |B| * sqrt(mean squared loss) from the device's last update (None: never measured);
    ``round_seconds`` the device's last measured round time (None: estimated from class and link)."""

    device: str
    battery_pct: float = 100.0
    charging: bool = False
    compute_class: str = "m4"
    link_quality: float = 1.0
    signal_quality: float = 1.0
    consent: bool = True
    online: bool = True
    reliability: float = 0.5
    statistical_utility: float | None = None
    round_seconds: float | None = None
    last_selected_round: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.battery_pct <= 100:
            raise ValueError(f"{self.device}: battery_pct {self.battery_pct} must be in [0, 100]")
        for what in ("link_quality", "signal_quality", "reliability"):
            v = getattr(self, what)
            if not 0 <= v <= 1:
                raise ValueError(f"{self.device}: {what} {v} must be in [0, 1]")
        if self.compute_class not in COMPUTE_SPEED:
            raise ValueError(f"{self.device}: unknown compute class {self.compute_class!r}; "
                             f"use one of {sorted(COMPUTE_SPEED)}")
        if self.statistical_utility is not None and not (math.isfinite(self.statistical_utility)
                                                         and self.statistical_utility >= 0):
            raise ValueError(f"{self.device}: statistical_utility must be finite and >= 0")
        if self.round_seconds is not None and not (math.isfinite(self.round_seconds) and self.round_seconds > 0):
            raise ValueError(f"{self.device}: round_seconds must be finite and > 0")

    @classmethod
    def from_status(cls, device: str, status: dict[str, Any], **history: Any) -> "DeviceStatus":
        """From a decoded status message (``broker.device_messages.decode_status``; the fields the fleet
        simulator and the edge runtime publish). ``history`` adds what the aggregator knows (reliability,
        statistical_utility, round_seconds, last_selected_round). ValueError on malformed fields."""
        def number(key: str, default: float) -> float:
            v = status.get(key, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{device}: status field {key!r} must be a number, got {v!r}")
            return float(v)

        return cls(device=device, battery_pct=number("battery_pct", 100), charging=status.get("charging") is True,
                   compute_class=str(status.get("compute_class", "m4")),
                   link_quality=number("link_quality_permille", 1000) / 1000,
                   signal_quality=number("signal_quality_permille", 1000) / 1000,
                   consent=status.get("consent", True) is True, online=status.get("state") == "online", **history)

    def estimated_round_seconds(self, update_bytes: int = 2048, compute_s: float = 20.0,
                                link_bytes_per_s: float = 20_000) -> float:
        """Measured round time, or compute (by class) + upload (by link quality) when never measured."""
        if self.round_seconds is not None:
            return self.round_seconds
        return compute_s / COMPUTE_SPEED[self.compute_class] + update_bytes / (link_bytes_per_s * max(self.link_quality, 0.05))


def reliability_from_counts(delivered: int, selected: int) -> float:
    """Laplace-smoothed delivery rate: a new device starts at 0.5, one failure does not zero it."""
    if delivered < 0 or selected < delivered:
        raise ValueError(f"delivered {delivered} must be in [0, selected={selected}]")
    return (delivered + 1) / (selected + 2)


def weighted_sample(names: Sequence[str], weights: np.ndarray, k: int, rng: np.random.Generator) -> list[str]:
    """``k`` distinct names drawn with probability proportional to weight (Efraimidis-Spirakis keys
    u^(1/w)); zero weights are drawn last. Deterministic for a given generator state."""
    w = np.asarray(weights, dtype=float)
    if w.shape != (len(names),) or np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite, >= 0 and one per device")
    u = rng.random(len(names))
    keys = np.where(w > 0, np.log(np.maximum(u, 1e-300)) / np.where(w > 0, w, 1.0), -np.inf)
    order = np.lexsort((u, keys))[::-1]  # largest key first; ties (zero weights) broken by u
    return [names[i] for i in order[:k]]


class SelectionPolicy(ABC):
    """One policy behind one interface; subclasses override ``eligible``, ``weights`` or ``choose``."""

    name = "base"

    def select(self, statuses: Sequence[DeviceStatus], k: int, round_: int, seed: int) -> list[str]:
        """Names of at most ``k`` devices for round ``round_`` (sorted); the same inputs give the same names."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        names = [s.device for s in statuses]
        if len(set(names)) != len(names):
            raise ValueError("one status per device: duplicate device names")
        pool = [s for s in statuses if s.consent and s.online and self.eligible(s)]
        if k >= len(pool):
            return sorted(s.device for s in pool)
        rng = np.random.default_rng([seed, round_])
        return sorted(self.choose(sorted(pool, key=lambda s: s.device), k, round_, rng))

    def eligible(self, status: DeviceStatus) -> bool:
        return True

    def weights(self, pool: Sequence[DeviceStatus], round_: int) -> np.ndarray:
        return np.ones(len(pool))

    def choose(self, pool: Sequence[DeviceStatus], k: int, round_: int, rng: np.random.Generator) -> list[str]:
        return weighted_sample([s.device for s in pool], self.weights(pool, round_), k, rng)


class Uniform(SelectionPolicy):
    name = "uniform"


class PowerAware(SelectionPolicy):
    name = "power-aware"

    def __init__(self, min_battery_pct: float = 30.0) -> None:
        if not 0 <= min_battery_pct <= 100:
            raise ValueError(f"min_battery_pct {min_battery_pct} must be in [0, 100]")
        self.min_battery_pct = min_battery_pct

    def eligible(self, s: DeviceStatus) -> bool:
        return s.charging or s.battery_pct >= self.min_battery_pct

    def weights(self, pool: Sequence[DeviceStatus], round_: int) -> np.ndarray:
        # a charging device pays nothing; otherwise the battery left, scaled by how cheaply it computes
        # and sends (a weak link keeps the radio on longer)
        speed = max(COMPUTE_SPEED.values())
        return np.array([1.0 if s.charging else
                         (s.battery_pct / 100) * (COMPUTE_SPEED[s.compute_class] / speed) ** 0.5 * max(s.link_quality, 0.05)
                         for s in pool])


class ReliabilityWeighted(SelectionPolicy):
    name = "reliability-weighted"

    def __init__(self, power: float = 2.0, floor: float = 0.02) -> None:
        if power < 0 or not 0 < floor <= 1:
            raise ValueError("power must be >= 0 and floor in (0, 1]")
        self.power, self.floor = power, floor

    def weights(self, pool: Sequence[DeviceStatus], round_: int) -> np.ndarray:
        return np.array([max(s.reliability, self.floor) ** self.power for s in pool])


class Oort(SelectionPolicy):
    name = "oort"

    def __init__(self, explore: float = 0.1, preferred_round_s: float = 30.0, alpha: float = 2.0,
                 cutoff: float = 0.95) -> None:
        if not 0 <= explore <= 1 or preferred_round_s <= 0 or alpha < 0 or not 0 < cutoff <= 1:
            raise ValueError("explore in [0, 1], preferred_round_s > 0, alpha >= 0, cutoff in (0, 1]")
        self.explore, self.preferred_round_s, self.alpha, self.cutoff = explore, preferred_round_s, alpha, cutoff

    def utility(self, s: DeviceStatus, round_: int) -> float:
        """Statistical utility (+ Oort's age bonus) x system utility; None-utility devices score 0 here."""
        stat = s.statistical_utility or 0.0
        if s.last_selected_round is not None and round_ > s.last_selected_round:
            stat += math.sqrt(0.1 * math.log(max(round_, 2)) / max(s.last_selected_round, 1))
        t = s.estimated_round_seconds()
        system = 1.0 if t <= self.preferred_round_s else (self.preferred_round_s / t) ** self.alpha
        return stat * system

    def choose(self, pool: Sequence[DeviceStatus], k: int, round_: int, rng: np.random.Generator) -> list[str]:
        fresh = [s for s in pool if s.statistical_utility is None]
        known = [s for s in pool if s.statistical_utility is not None]
        n_explore = min(len(fresh), max(int(round(self.explore * k)), k - len(known)))
        chosen = weighted_sample([s.device for s in fresh], np.ones(len(fresh)), n_explore, rng)
        n_exploit = k - len(chosen)
        if n_exploit and known:
            util = np.array([self.utility(s, round_) for s in known])
            edge = np.sort(util)[::-1][min(n_exploit, len(util)) - 1] * self.cutoff
            top = [i for i in range(len(known)) if util[i] >= edge]
            chosen += weighted_sample([known[i].device for i in top], np.maximum(util[top], 1e-12), n_exploit, rng)
        return chosen


POLICIES: dict[str, type[SelectionPolicy]] = {c.name: c for c in (Uniform, PowerAware, ReliabilityWeighted, Oort)}


def make_policy(name: str, **kwargs: Any) -> SelectionPolicy:
    """A policy by its config name, e.g. ``make_policy("power-aware", min_battery_pct=40)``."""
    try:
        return POLICIES[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown selection policy {name!r}; choose one of {sorted(POLICIES)}") from None


@dataclass(frozen=True)
class FairnessReport:
    """How often each device was chosen over a run; Jain's index 1 = perfectly even, 1/n = one device."""

    rounds: int
    counts: dict[str, int]
    jain_index: float
    never_chosen: int
    min_count: int
    max_count: int

    def summary(self) -> dict[str, Any]:
        """The JSON row of a round (no per-device counts: those are O(fleet))."""
        return {"jain_index": round(self.jain_index, 4), "never_chosen": self.never_chosen,
                "min_count": self.min_count, "max_count": self.max_count}


def fairness_of_counts(counts: dict[str, int], rounds: int) -> FairnessReport:
    """Jain's index ((Σx)² / (n Σx²)) and the spread of per-device selection counts (devices never chosen: 0)."""
    x = np.array(list(counts.values()), dtype=float)
    jain = float(x.sum() ** 2 / (len(x) * (x ** 2).sum())) if x.size and x.any() else 0.0
    return FairnessReport(rounds, dict(counts), jain, int((x == 0).sum()),
                          int(x.min()) if x.size else 0, int(x.max()) if x.size else 0)


def fairness_report(selections: Sequence[Sequence[str]], devices: Sequence[str]) -> FairnessReport:
    """Counts per device over ``selections`` (one list of names per round), including devices never chosen."""
    counts = {d: 0 for d in devices}
    for chosen in selections:
        for d in chosen:
            if d not in counts:
                raise ValueError(f"selected device {d!r} is not among the devices")
            counts[d] += 1
    return fairness_of_counts(counts, len(selections))


#: Selection specs the round engine handles without a status-fed policy.
BUILTIN_SELECTIONS = ("all", "online", "fraction")


@dataclass(frozen=True)
class SelectionSpec:
    """``--selection NAME[:KEY=VALUE,...]`` for a policy above: ``k=N`` devices or ``fraction=F`` of the
    trainable devices per round (default: every eligible one), other keys are the policy's arguments,
    e.g. ``power-aware:fraction=0.2,min_battery_pct=40`` or ``oort:k=50,explore=0.2``."""

    policy: str
    count: int | None = None
    fraction: float | None = None
    args: tuple[tuple[str, float], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> "SelectionSpec | None":
        """None for the engine's built-in selections (all, online, fraction:F); ValueError when malformed."""
        name, _, rest = spec.partition(":")
        if name in BUILTIN_SELECTIONS:
            return None
        if name not in POLICIES:
            raise ValueError(f"selection {spec!r}: use all, online, fraction:F or a policy "
                             f"{sorted(POLICIES)}[:k=N|fraction=F,KEY=VALUE,...]")
        count, fraction, args = None, None, []
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not sep or not math.isfinite(number):
                raise ValueError(f"selection {spec!r}: {item!r} is not KEY=NUMBER")
            if key == "k":
                if number < 1 or number != int(number):
                    raise ValueError(f"selection {spec!r}: k must be a whole number >= 1")
                count = int(number)
            elif key == "fraction":
                if not 0 < number <= 1:
                    raise ValueError(f"selection {spec!r}: fraction must be in (0, 1]")
                fraction = number
            else:
                args.append((key, number))
        if count is not None and fraction is not None:
            raise ValueError(f"selection {spec!r}: give k or fraction, not both")
        out = cls(name, count, fraction, tuple(args))
        out.make()  # the policy's own checks (unknown or out-of-range arguments)
        return out

    def make(self) -> SelectionPolicy:
        try:
            return make_policy(self.policy, **dict(self.args))
        except TypeError as exc:
            raise ValueError(f"selection policy {self.policy!r}: {exc}") from None

    def size(self, trainable: int) -> int:
        """How many devices a round asks for out of ``trainable``."""
        if self.count is not None:
            return self.count
        if self.fraction is not None:
            return max(1, round(self.fraction * trainable))
        return trainable
