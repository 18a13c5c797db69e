"""How a secure-aggregation round is configured (``SecAggSettings``) and the per-round plan it derives from the
selection: thresholds, fixed point, SecAgg+'s graph degree, the consistency round, distributed DP's noise.
Kept apart from the round's protocol (``training.federated.secagg_round``), which only reads the plan."""
from __future__ import annotations

import math
from dataclasses import dataclass

from broker.secagg_plan import SecAggPlan
from edge_runtime.secagg_client import noise_sd
from edge_runtime.secagg_plus import choose_parameters


@dataclass(frozen=True)
class SecAggSettings:
    #: t = max(2, ceil(threshold_fraction · selected)): inputs and unmask replies a round needs.
    threshold_fraction: float = 2 / 3
    #: Fixed point: each coordinate clipped to ±bound, scaled so that the sum of the round's inputs decodes.
    bound: float = 4.0
    #: L2 norm each device clips its update to (required with noise).
    clip: float | None = None
    #: z: the sum of any t inputs carries N(0, (z·C)²); 0 disables distributed DP.
    noise_multiplier: float = 0.0
    delta: float = 1e-6
    #: SecAgg+ sized from the fleet: the dropout rate to survive (k and t from ``choose_parameters``).
    dropout: float | None = None
    #: SecAgg+: the share of devices that may collude with the aggregator.
    corrupt: float = 0.05
    #: SecAgg+ with a fixed number of neighbours k (t = ceil(threshold_fraction · k)); overrides ``dropout``.
    degree: int | None = None
    #: The consistency round (signed survivor lists); None: on exactly when SecAgg+ is.
    consistency: bool | None = None
    #: Device-side Poisson sampling rate q (None: every selected device's update counts). The coin is each
    #: device's own and the masked inputs hide its outcome: the only sampling the accountant amplifies.
    poisson_rate: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.threshold_fraction <= 1 or self.bound <= 0 or self.noise_multiplier < 0:
            raise ValueError("threshold_fraction in (0, 1], bound > 0 and noise_multiplier >= 0 required")
        if self.noise_multiplier > 0 and self.clip is None:
            raise ValueError("distributed DP needs a clip norm: the noise is calibrated to it")
        if (self.degree is not None and self.degree < 2) or not 0 <= self.corrupt < 0.5:
            raise ValueError("degree must be >= 2 (or None) and 0 <= corrupt < 0.5")
        if self.poisson_rate is not None and not 0 < self.poisson_rate <= 1:
            raise ValueError("poisson_rate must be in (0, 1] (or None)")

    @property
    def sparse(self) -> bool:
        return self.degree is not None or self.dropout is not None

    def plan(self, session: int, members: tuple[int, ...]) -> SecAggPlan:
        """The round's plan for the selected devices ``members`` (wire ids; SecAgg+ builds its graph on them)."""
        devices = len(members)
        degree, t = 0, min(devices, max(2, math.ceil(self.threshold_fraction * devices)))
        if self.degree is not None and self.degree < devices - 1:
            degree = self.degree - self.degree % 2
            t = min(degree, max(2, math.ceil(self.threshold_fraction * degree)))
        elif self.degree is None and self.dropout is not None and devices >= 3:
            chosen = choose_parameters(devices, self.dropout, self.corrupt)
            degree, t = (chosen.k if chosen.k < devices - 1 else 0), chosen.threshold
        consistency = 0
        if self.consistency or (self.consistency is None and self.sparse):
            consistency = min(devices, math.floor(devices * (1 + self.corrupt) / 2) + 1)
        sd = noise_sd(self.noise_multiplier, self.clip, t) if self.noise_multiplier > 0 else 0.0
        bound = self.bound if self.clip is None else min(self.bound, self.clip + 8 * sd)
        scale = float(2 ** math.floor(math.log2((2**31 - 1) / (bound * devices))))
        return SecAggPlan(session, t, devices, bound, scale, self.clip, sd, degree, consistency,
                          self.poisson_rate or 1.0, tuple(sorted(members)) if degree else ())
