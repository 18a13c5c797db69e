"""Central differential privacy for federated rounds: DP-FedAvg with a real accountant.

McMahan et al. 2018 (DP-FedAvg): each device's delta is clipped to L2 norm C, the clipped deltas are
summed, Gaussian noise of standard deviation z·C is added to the sum, and the sum is divided by the
expected number of participants. Privacy is per device (one patient), accounted over rounds with
Google's ``dp-accounting`` (RDP and PLD) for Poisson sampling with rate q = selected / registered.
Adaptive clipping (Andrew et al. 2021) moves C towards a quantile of the update norms, with the
fraction below C released through its own noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from training.federated.robust import clip_delta, delta_norm
from training.federated.strategies import ClientUpdate, Strategy, Weights, add


def epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float,
            accountant: str = "rdp") -> float:
    """ε after ``rounds`` Poisson-sampled Gaussian rounds (``accountant``: "rdp" or "pld")."""
    import dp_accounting
    from dp_accounting import pld, rdp

    if rounds == 0:
        return 0.0
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), rounds)
    acc = rdp.RdpAccountant() if accountant == "rdp" else pld.PLDAccountant()
    try:
        acc.compose(event)
        return float(acc.get_epsilon(delta))
    except (ValueError, OverflowError, MemoryError):  # PLD with almost no noise: no useful guarantee
        return float("inf")


def latest_ledger_row(strategy: Strategy) -> dict[str, Any] | None:
    """The privacy ledger's entry for the round just aggregated, JSON-safe (an unbounded ε becomes None), or
    None for a strategy that keeps no ledger: what a round's history row reports in-process and over MQTT."""
    ledger = getattr(strategy, "ledger", None)
    if not ledger:
        return None
    return {k: v if not isinstance(v, float) or np.isfinite(v) else None for k, v in ledger[-1].__dict__.items()}


@dataclass
class LedgerEntry:
    round: int
    participants: int
    clip: float
    noise_multiplier: float
    sampling_rate: float
    epsilon_rdp: float
    epsilon_pld: float
    delta: float


class DPFedAvg(Strategy):
    """Clip, sum, add N(0, (z·C)²), divide by the expected participants; refuses rounds past the budget."""

    name = "dp_fedavg"

    def __init__(self, num_devices: int, clip: float = 0.5, noise_multiplier: float = 1.0, delta: float = 1e-6,
                 epsilon_budget: float | None = None, adaptive_quantile: float | None = None,
                 adaptive_lr: float = 0.2, count_noise: float = 1.0, seed: int = 0) -> None:
        if num_devices < 1 or clip <= 0 or noise_multiplier < 0 or not 0 < delta < 1:
            raise ValueError("num_devices >= 1, clip > 0, noise_multiplier >= 0 and 0 < delta < 1 required")
        self.num_devices, self.clip, self.z, self.delta = num_devices, clip, noise_multiplier, delta
        self.epsilon_budget, self.quantile, self.adaptive_lr = epsilon_budget, adaptive_quantile, adaptive_lr
        self.count_noise = count_noise
        self.rng = np.random.default_rng(seed)
        self.ledger: list[LedgerEntry] = []

    def epsilon_if_run(self, participants: int) -> float:
        """ε (RDP) after one more round with ``participants`` sampled: the aggregator asks before a round."""
        q = participants / self.num_devices
        return epsilon(self.z, q, len(self.ledger) + 1, self.delta) if self.z > 0 else float("inf")

    def within_budget(self, participants: int) -> bool:
        return self.epsilon_budget is None or self.epsilon_if_run(participants) <= self.epsilon_budget

    def _combine(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        n = len(updates)
        clipped = [clip_delta(u.delta, self.clip) for u in updates]
        noisy_sum = [sum(c[i].astype(np.float64) for c in clipped)
                     + self.rng.normal(0.0, self.z * self.clip, size=global_weights[i].shape)
                     for i in range(len(global_weights))]
        mean = [(s / n).astype(np.float32) for s in noisy_sum]
        q = n / self.num_devices
        rounds = len(self.ledger) + 1
        self.ledger.append(LedgerEntry(rounds, n, self.clip, self.z, q,
                                       epsilon(self.z, q, rounds, self.delta, "rdp") if self.z else float("inf"),
                                       epsilon(self.z, q, rounds, self.delta, "pld") if self.z else float("inf"),
                                       self.delta))
        if self.quantile is not None:
            self._adapt_clip(updates)
        return add(global_weights, mean)

    def _adapt_clip(self, updates: Sequence[ClientUpdate]) -> None:
        """C ← C·exp(−η (b̃ − γ)), b̃ the noised share of updates no longer than C (Andrew et al. 2021)."""
        norms = [delta_norm(u.delta) for u in updates]
        below = sum(nrm <= self.clip for nrm in norms) + self.rng.normal(0.0, self.count_noise)
        share = below / len(updates)
        self.clip = float(self.clip * np.exp(-self.adaptive_lr * (share - self.quantile)))

    def state(self) -> dict[str, Any]:
        rows = [[e.round, e.participants, e.clip, e.noise_multiplier, e.sampling_rate, e.epsilon_rdp,
                 e.epsilon_pld, e.delta] for e in self.ledger]
        return {"clip": [np.array([self.clip])], "ledger": [np.array(rows, np.float64).reshape(-1, 8)]}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("clip"):
            self.clip = float(state["clip"][0][0])
        if state.get("ledger"):
            self.ledger = [LedgerEntry(int(r[0]), int(r[1]), *map(float, r[2:])) for r in state["ledger"][0]]
        # the noise stream continues from a new point after a restart, never from the same one
        self.rng = np.random.default_rng([len(self.ledger), int(self.rng.integers(1 << 31))])

    def ledger_rows(self) -> list[dict]:
        return [e.__dict__ for e in self.ledger]
