"""What the privacy bench runs: its settings, the defences, noise calibrated to a target ε, and the order of the
runs (stages, most wanted first)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

EPSILONS = (1.0, 4.0, 8.0, math.inf)
ATTACKS = ("sign_flip", "scale:10", "gaussian:1", "label_flip", "replacement:10")
SHARES = (0.1, 0.2, 0.3)
DELTA = 1e-6


@dataclass(frozen=True)
class BenchSettings:
    #: 20 rounds as in the federated bench; at 10 the clean runs' validation F1 was still flat (0.27-0.30 on
    #: seed 0), so attack and defence differences were mostly noise of an untrained model.
    rounds: int = 20
    local_epochs: int = 1
    seed: int = 0
    #: DP-FedAvg's clipping norm, fixed before any run: about the median norm of the first round's honest
    #: deltas on the DS1 training patients (1.4-2.3, median 2.0; never DS2).
    clip: float = 1.0
    sub_devices: tuple[int, ...] = (1, 4, 16)
    epsilons: tuple[float, ...] = EPSILONS
    attacks: tuple[str, ...] = ATTACKS
    shares: tuple[float, ...] = SHARES
    secagg_devices: tuple[int, ...] = (22, 100)
    #: Rounds of simulated devices running the real client (``tools.fleet_sim.secagg_devices``): plain FedAvg and
    #: SecAgg+ with 30 % dropping after their masked input, measured in the same run.
    secagg_fleet_devices: tuple[int, ...] = (1000,)
    #: Plain/SecAgg+ pairs per fleet size (the targets take the mean of the per-pair ratios, with their range).
    secagg_fleet_repeats: int = 3

    @classmethod
    def quick(cls) -> "BenchSettings":
        return cls(rounds=2, sub_devices=(1,), epsilons=(4.0, math.inf), attacks=("sign_flip",), shares=(0.3,),
                   secagg_devices=(10,), secagg_fleet_devices=(40,), secagg_fleet_repeats=1)


def noise_for_epsilon(eps: float, rounds: int, delta: float = DELTA, sampling_rate: float = 1.0) -> float:
    """The smallest noise multiplier whose RDP ε after ``rounds`` is at most ``eps`` (bisection)."""
    from training.federated.privacy import epsilon

    if math.isinf(eps):
        return 0.0
    lo, hi = 0.05, 1.0
    while epsilon(hi, sampling_rate, rounds, delta) > eps:
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if epsilon(mid, sampling_rate, rounds, delta) > eps else (lo, mid)
    return hi


def defences(n_devices: int) -> dict[str, tuple[str, dict]]:
    """Each defence's strategy and arguments, set for up to 30 % attackers (the largest share tested)."""
    f = max(1, round(0.3 * n_devices))
    return {"fedavg": ("fedavg", {}), "median": ("median", {}), "trimmed_mean": ("trimmed_mean", {"trim": 0.3}),
            "multi_krum": ("krum", {"byzantine": f, "multi": n_devices - f}),
            "norm_bounded": ("norm_bounded", {}),  # clipped to each round's median norm
            "cosine_filter": ("cosine_filter", {"byzantine": f}),  # the n - f most aligned with the median
            "cosine_trust": ("cosine_filter", {"byzantine": f, "memory": 0.9})}  # ... by each device's history


Allow = Callable[[str], bool]

#: The order runs are done in, most wanted first, so that a bench stopped early has the important cells: the
#: 30 % attacker row (the goal), the secure-aggregation overhead, the other shares, then the ε sweep.
STAGES: tuple[tuple[str, Allow], ...] = (
    ("clean runs and 30 % attackers", lambda k: "/attack/clean/" in k or ("/0.3/" in k and "/attack/" in k)),
    ("secure-aggregation overhead", lambda k: k.startswith(("secagg/", "secagg-fleet/"))),
    ("20 % attackers", lambda k: "/0.2/" in k),
    ("10 % attackers", lambda k: "/0.1/" in k),
    ("epsilon sweep", lambda k: "/dp/" in k),
)
