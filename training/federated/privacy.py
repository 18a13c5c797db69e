"""Central differential privacy for federated rounds: DP-FedAvg with an accountant that composes rounds.

McMahan et al. 2018 (DP-FedAvg): each device's delta is clipped to L2 norm C, the clipped deltas are
summed, Gaussian noise of standard deviation z·C is added to the sum, and the noisy sum is divided by a
fixed denominator: the number of devices the round selected (for device-side Poisson sampling, the expected
number q·N). The denominator is fixed before any update is seen and does not depend on who delivers, so the
released mean is the noisy sum (sensitivity C under adding or removing one device) scaled by a public
constant: dividing by the actual count instead would make the scale depend on the one device's presence and
break that argument. The price is a mean shrunk towards zero when selected devices drop out.

Privacy is per device (one patient). Each round is charged to ``training.federated.accountant`` with its own
noise multiplier and sampling; a selection published on the bus gets no amplification (q = 1).

Adaptive clipping (Andrew et al. 2021) moves C towards the ``adaptive_quantile`` of the update norms, from the
share of updates no longer than C released with noise σ_b (``count_noise``) on the count of centred bits.
That release costs privacy too: with adaptive clipping the configured z is the round's total, the sum gets the
larger z_Δ = (z^-2 − (2σ_b)^-2)^-1/2, and the accountant charges z (``adaptive_clipping_sum_noise``). A count
released without noise (σ_b = 0) is charged as unbounded.

The noise comes from ``edge_runtime.dp_noise`` by name (``noise``): "secure" (ChaCha20 keyed by the OS, the
default, and what the aggregator service uses unless told otherwise) or "seeded" (reproducible simulations and
benches, with ``seed``); every ledger row records which (``noise``).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_runtime.dp_noise import make_noise
from training.federated.accountant import (
    Accountant,
    RoundCharge,
    Sampling,
    adaptive_clipping_sum_noise,
    epsilon_of_charges,
)
from training.federated.robust import clip_delta, delta_norm
from training.federated.strategies import (
    ClientUpdate,
    RoundContext,
    Strategy,
    Weights,
    add,
)

#: Meta of a ClientUpdate that stands for the sum of ``count`` deltas already clipped to the round's C (the
#: partial-sum rule's output, ``training.federated.partial_sums``), and of how many were no longer than C.
CLIPPED_SUM, WITHIN_CLIP = "clipped_sum_of", "within_clip"


def epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float,
            accountant: str = "rdp") -> float:
    """ε after ``rounds`` identical Gaussian rounds, Poisson-sampled at ``sampling_rate`` (< 1) or not (1.0)."""
    sampling = Sampling.PUBLIC if sampling_rate >= 1 else Sampling.DEVICE_POISSON
    return epsilon_of_charges([RoundCharge(r, noise_multiplier, sampling, min(1.0, sampling_rate))
                               for r in range(1, rounds + 1)], delta, accountant)


def json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """An unbounded ε becomes None (JSON has no infinity)."""
    return {k: v if not isinstance(v, float) or np.isfinite(v) else None for k, v in row.items()}


class DPFedAvg(Strategy):
    """Clip, sum, add N(0, (z·C)²), divide by the round's fixed denominator; refuses rounds past the budget."""

    name = "dp_fedavg"

    def __init__(self, num_devices: int, clip: float = 0.5, noise_multiplier: float = 1.0, delta: float = 1e-6,
                 epsilon_budget: float | None = None, adaptive_quantile: float | None = None,
                 adaptive_lr: float = 0.2, count_noise: float = 1.0, noise: str = "secure",
                 seed: int | None = None) -> None:
        if num_devices < 1 or clip <= 0 or noise_multiplier < 0 or not 0 < delta < 1 or count_noise < 0:
            raise ValueError("num_devices >= 1, clip > 0, noise_multiplier >= 0, count_noise >= 0 and "
                             "0 < delta < 1 required")
        self.num_devices, self.clip, self.z, self.delta = num_devices, clip, noise_multiplier, delta
        self.epsilon_budget, self.quantile, self.adaptive_lr = epsilon_budget, adaptive_quantile, adaptive_lr
        self.count_noise = count_noise
        #: The noise multiplier the sum gets (z, or z_Δ > z with adaptive clipping) and the one charged.
        self.sum_z, self.charged_z = noise_multiplier, noise_multiplier
        if adaptive_quantile is not None:
            if count_noise > 0:
                self.sum_z = adaptive_clipping_sum_noise(noise_multiplier, count_noise)
            else:
                self.charged_z = 0.0  # the clip count goes out exactly: no guarantee, and the ledger says so
        #: Where the Gaussian draws come from (``edge_runtime.dp_noise``; ``seed`` only for "seeded").
        self.noise = make_noise(noise, seed)
        self.accountant = Accountant(delta)
        self.ledger: list[dict[str, Any]] = []
        self._ctx: RoundContext | None = None

    # ------------------------------------------------------------------------------ engine hooks
    def begin_round(self, ctx: RoundContext) -> None:
        self._ctx = ctx

    def _charge_for(self, ctx: RoundContext) -> RoundCharge:
        if ctx.sampling == Sampling.DEVICE_POISSON.value:
            return RoundCharge(ctx.round, self.charged_z, Sampling.DEVICE_POISSON, ctx.sampling_rate)
        return RoundCharge(ctx.round, self.charged_z)

    def allows_round(self, ctx: RoundContext) -> bool:
        return self.epsilon_budget is None or self.epsilon_if_run(ctx) <= self.epsilon_budget

    def epsilon_if_run(self, ctx: RoundContext) -> float:
        """ε (RDP) after one more round like ``ctx``: the engine asks before it opens the round."""
        return self.accountant.epsilon_if(self._charge_for(ctx))

    def privacy_row(self) -> dict[str, Any] | None:
        return json_safe(self.ledger[-1]) if self.ledger else None

    def privacy_budget(self) -> float | None:
        return self.epsilon_budget

    # ------------------------------------------------------------------------------ the mechanism
    def _denominator(self, ctx: RoundContext) -> float:
        if ctx.sampling == Sampling.DEVICE_POISSON.value:
            return ctx.sampling_rate * ctx.registered
        return float(ctx.selected)

    def sum_args(self) -> dict[str, Any]:
        """The clip this round's updates are clipped to (it moves between rounds with adaptive clipping)."""
        return {"clip": self.clip}

    def combine(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        if len(updates) == 1 and CLIPPED_SUM in updates[0].meta:  # an aggregator's sum of clipped deltas
            summed = updates[0]
            return self._release(global_weights, summed.delta, summed.meta[CLIPPED_SUM], summed.meta[WITHIN_CLIP])
        clipped = [clip_delta(u.delta, self.clip) for u in updates]
        total = [sum(c[i].astype(np.float64) for c in clipped) for i in range(len(global_weights))]
        within = sum(delta_norm(u.delta) <= self.clip for u in updates)
        return self._release(global_weights, total, len(updates), within)

    def _release(self, global_weights: Weights, clipped_sum: Weights, count: int, within: int) -> Weights:
        """Noise the sum of ``count`` deltas clipped to C (``within`` of them no longer than C), divide by the
        round's fixed denominator, charge the round, adapt C. Whoever summed the clipped deltas (this strategy,
        an aggregator's running sum, workers' partial sums), one device moves the sum by at most C."""
        # a caller that opens no rounds (a unit test, a script) asserts that these updates are the whole selection
        ctx = self._ctx or RoundContext(len(self.ledger) + 1, self.num_devices, count)
        self._ctx = None
        denominator = max(1.0, self._denominator(ctx))
        noisy_sum = [np.asarray(clipped_sum[i], np.float64)
                     + self.noise.normal(0.0, self.sum_z * self.clip, size=global_weights[i].shape)
                     for i in range(len(global_weights))]
        mean = [(s / denominator).astype(np.float32) for s in noisy_sum]
        row = self.accountant.charge(self._charge_for(ctx))
        row.update(participants=count, selected=ctx.selected, denominator=denominator, clip=self.clip,
                   sum_noise_multiplier=self.sum_z, noise=self.noise.label,
                   count_noise=self.count_noise if self.quantile is not None else None)
        self.ledger.append(row)
        if self.quantile is not None:
            self._adapt_clip(within - 0.5 * count, denominator)
        return add(global_weights, mean)

    def _adapt_clip(self, centred: float, denominator: float) -> None:
        """C ← C·exp(−η (b̃ − γ)), b̃ = (Σ(b_i − ½) + N(0, σ_b²)) / denominator + ½ (Andrew et al.)."""
        share = (centred + self.noise.normal(0.0, self.count_noise)) / denominator + 0.5
        self.clip = float(self.clip * np.exp(-self.adaptive_lr * (share - self.quantile)))

    # ------------------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        ledger = json.dumps([json_safe(r) for r in self.ledger]).encode()
        return {"clip": [np.array([self.clip])], "ledger_json": [np.frombuffer(ledger, np.uint8)]}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("clip"):
            self.clip = float(state["clip"][0][0])
        if state.get("ledger_json"):
            rows = json.loads(bytes(np.asarray(state["ledger_json"][0], np.uint8)).decode())
            self.ledger = [{k: (np.inf if v is None and k.startswith("epsilon") else v) for k, v in r.items()}
                           for r in rows]
            self.accountant = Accountant(self.delta, [
                RoundCharge(r["round"], r["noise_multiplier"], Sampling(r["sampling"]), r["sampling_rate"])
                for r in rows])
        elif state.get("ledger") is not None and len(state["ledger"][0]):
            self._recharge_legacy(np.asarray(state["ledger"][0], np.float64))
        # the noise stream continues from a new point after a restart, never from the same one
        self.noise = self.noise.resumed(len(self.ledger))

    def _recharge_legacy(self, rows: np.ndarray) -> None:
        """A checkpoint of the earlier ledger (round, participants, clip, z, q, ε rdp, ε pld, δ per row), whose ε
        claimed amplification at q = participants / devices: its rounds are charged again as what they were,
        public selections (q = 1), so a run resumed across the upgrade does not restart or understate its ε."""
        self.accountant = Accountant(self.delta)
        self.ledger = []
        for r in rows:
            row = self.accountant.charge(RoundCharge(int(r[0]), float(r[3])))
            row.update(participants=int(r[1]), clip=float(r[2]), recharged_from_legacy_ledger=True)
            self.ledger.append(row)

    def ledger_rows(self) -> list[dict]:
        return [json_safe(r) for r in self.ledger]
