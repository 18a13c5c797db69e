"""Every aggregation strategy by its config name: the one place a new strategy is registered."""
from __future__ import annotations

from typing import Any

from training.federated.robust import CoordinateMedian, Krum, NormBounded, TrimmedMean
from training.federated.strategies import FedAdam, FedAvg, FedAvgM, FedNova, FedProx, Scaffold, Strategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvg, FedProx, FedNova, Scaffold, FedAvgM, FedAdam,
                              CoordinateMedian, TrimmedMean, Krum, NormBounded)
}


def make_strategy(name: str, **kwargs: Any) -> Strategy:
    """A strategy by its config name, e.g. ``make_strategy("fedprox", proximal_mu=0.1)``."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}") from None
    return cls(**kwargs)
