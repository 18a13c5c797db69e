"""Local differential privacy on the device: the delta is clipped and noised before it leaves.

With central DP (``training.federated.privacy``) the aggregator sees each update in the clear and is trusted
to add the noise; with local DP the device does it itself, so its guarantee holds against the aggregator,
the broker and anyone who reads the bus. The mechanism is the Gaussian mechanism on the clipped delta:
``clip(Δ, C) + N(0, (z·C)² I)``.

What is protected: the whole local dataset of this device (one patient) against any other dataset. Two
clipped deltas are at most 2C apart (the ball of radius C has diameter 2C), so each round is a Gaussian
mechanism with sensitivity 2C and noise z·C, i.e. μ = 2/z in Gaussian-DP terms (Dong, Roth & Su 2019).
The device accounts only the rounds it actually sent (it knows it took part, so there is no subsampling
amplification). Rounds compose exactly in GDP: μ_total = sqrt(Σ μ_r²), and (ε, δ) follows from the
Gaussian mechanism's exact trade-off (Balle & Wang 2018), δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2).
That is the tight value that a PLD accountant approximates (``dp-accounting`` agrees, tested); computing
it needs only scipy, so a Raspberry Pi without TensorFlow or ``dp-accounting`` keeps its own ledger.

Local noise is large: every device adds the noise a central mechanism adds once to the sum. Under secure
aggregation (``edge_runtime.secure_aggregation``) devices add only a share of it (distributed DP).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from edge_runtime.dp_noise import NoiseSource

Weights = list[np.ndarray]


@dataclass(frozen=True)
class LocalDP:
    """Clip to L2 norm ``clip``, add N(0, (noise_multiplier·clip)²); stop before ``epsilon_budget``."""

    clip: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-6
    #: The device declines any round that would take its ε over this (None: no limit).
    epsilon_budget: float | None = None

    def __post_init__(self) -> None:
        if not (self.clip > 0 and self.noise_multiplier > 0 and 0 < self.delta < 1):
            raise ValueError("local DP needs clip > 0, noise_multiplier > 0 and 0 < delta < 1")
        if self.epsilon_budget is not None and self.epsilon_budget <= 0:
            raise ValueError("epsilon_budget must be positive (or None)")

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> LocalDP:
        """From a round plan's ``local_dp`` entry, e.g. {"clip": 0.5, "noise_multiplier": 1.1}."""
        unknown = set(cfg) - {"clip", "noise_multiplier", "delta", "epsilon_budget"}
        if unknown:
            raise ValueError(f"local_dp settings not understood: {sorted(unknown)}")
        return cls(**{k: (None if v is None else float(v)) for k, v in cfg.items()})

    @property
    def mu(self) -> float:
        """Gaussian-DP μ of one round: sensitivity 2C over noise z·C."""
        return 2.0 / self.noise_multiplier

    def stronger(self, other: LocalDP | None) -> LocalDP:
        """The setting that protects more: a plan can raise a device's noise, never lower it."""
        if other is None:
            return self
        return LocalDP(min(self.clip, other.clip), max(self.noise_multiplier, other.noise_multiplier),
                       min(self.delta, other.delta), _min_budget(self.epsilon_budget, other.epsilon_budget))

    def privatize(self, delta: Sequence[np.ndarray], rng: NoiseSource) -> Weights:
        """clip(Δ, C) + N(0, (z·C)²) per coordinate, in float64 then back to float32; ``rng``: the device's
        noise source (``edge_runtime.dp_noise``, secure unless a test seeds it)."""
        norm_ = math.sqrt(sum(float(np.sum(np.square(d, dtype=np.float64))) for d in delta))
        factor = min(1.0, self.clip / norm_) if norm_ > 0 else 1.0
        sigma = self.noise_multiplier * self.clip
        return [(np.asarray(d, np.float64) * factor + rng.normal(0.0, sigma, size=np.shape(d))).astype(np.float32)
                for d in delta]


def _min_budget(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def gdp_epsilon(mu: float, delta: float) -> float:
    """ε of a μ-GDP mechanism at ``delta``: the root of δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2)."""
    if mu <= 0:
        return 0.0
    if not math.isfinite(mu):
        return math.inf

    def excess(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    if excess(0.0) <= 0:
        return 0.0
    hi = 1.0
    while excess(hi) > 0:
        hi *= 2
        if hi > 1e6:
            return math.inf
    return float(brentq(excess, 0.0, hi, xtol=1e-10, rtol=1e-12))


def gaussian_epsilon(noise_multiplier: float, rounds: int, delta: float, sensitivity: float = 2.0) -> float:
    """ε after ``rounds`` Gaussian releases with noise ``noise_multiplier``·C and sensitivity ``sensitivity``·C."""
    return gdp_epsilon(math.sqrt(rounds) * sensitivity / noise_multiplier, delta) if rounds else 0.0


@dataclass
class PrivacyLedger:
    """A device's own record of what it released: one row per round it sent, and the ε so far."""

    delta: float
    rows: list[dict[str, float]] = field(default_factory=list)

    @property
    def mu(self) -> float:
        return math.sqrt(sum(r["mu"] ** 2 for r in self.rows))

    @property
    def epsilon(self) -> float:
        return gdp_epsilon(self.mu, self.delta)

    def epsilon_if(self, dp: LocalDP) -> float:
        """ε after one more round with ``dp``: asked before training, so a budget is never overshot."""
        return gdp_epsilon(math.sqrt(self.mu ** 2 + dp.mu ** 2), min(self.delta, dp.delta))

    def record(self, round_: int, dp: LocalDP) -> dict[str, float]:
        self.delta = min(self.delta, dp.delta)
        self.rows.append({"round": round_, "clip": dp.clip, "noise_multiplier": dp.noise_multiplier, "mu": dp.mu})
        self.rows[-1]["epsilon"] = self.epsilon
        return self.rows[-1]

    def summary(self) -> dict[str, Any]:
        """What the device's status reports: rounds released, ε at δ, and the last round's setting."""
        last = self.rows[-1] if self.rows else {}
        return {"mechanism": "local_gaussian", "rounds": len(self.rows), "epsilon": round(self.epsilon, 6),
                "delta": self.delta, "clip": last.get("clip"), "noise_multiplier": last.get("noise_multiplier")}
