"""Every aggregation strategy by its config name: the one place a new strategy is registered."""
from __future__ import annotations

import inspect
from typing import Any, Callable

from training.federated.fedbuff import FedBuff
from training.federated.privacy import DPFedAvg
from training.federated.robust import (
    CoordinateMedian,
    CosineFilter,
    Krum,
    NormBounded,
    TrimmedMean,
)
from training.federated.strategies import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedNova,
    FedProx,
    Scaffold,
    Strategy,
)

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvg, FedProx, FedNova, Scaffold, FedAvgM, FedAdam,
                              CoordinateMedian, TrimmedMean, Krum, NormBounded, CosineFilter, DPFedAvg,
                              FedBuff)
}


def _build(name: str, kwargs: dict[str, Any], make_inner: Callable[..., Strategy]) -> Strategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}") from None
    if "make_inner" in inspect.signature(cls).parameters:  # a strategy around another one (FedBuff)
        kwargs = {**kwargs, "make_inner": make_inner}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # an unknown --strategy-arg
        raise ValueError(f"strategy {name!r}: {exc}") from None


def make_strategy(name: str, **kwargs: Any) -> Strategy:
    """A strategy by its config name, e.g. ``make_strategy("fedprox", proximal_mu=0.1)``."""
    return _build(name, kwargs, make_strategy)


def make_fleet_strategy(name: str, args: dict[str, Any], num_devices: int, dp_noise: str = "secure",
                        run_seed: int | None = None) -> Strategy:
    """``make_strategy`` for a fleet: strategies that need the fleet size (SCAFFOLD, DP-FedAvg) get it, and
    strategies that draw DP noise (DP-FedAvg) get the run's noise source ``dp_noise`` (``edge_runtime.dp_noise``:
    the service's or simulation's config, never a strategy argument), also as the inner strategy of FedBuff.
    A seeded run's noise follows its ``run_seed`` (unless the strategy arguments name a seed), so the seeds of a
    multi-seed bench draw different noise and its spread includes the noise's."""
    args = dict(args)
    params = inspect.signature(STRATEGIES[name]).parameters if name in STRATEGIES else {}
    if "num_devices" in params:
        args.setdefault("num_devices", num_devices)
    if "noise" in params:
        if "noise" in args:
            raise ValueError("the DP noise source is the run's setting (--dp-noise), not a strategy argument")
        args["noise"] = dp_noise
        if dp_noise == "seeded" and run_seed is not None and "seed" in params:
            args.setdefault("seed", run_seed)
    return _build(name, args, lambda inner, **inner_args: make_fleet_strategy(inner, inner_args, num_devices,
                                                                              dp_noise, run_seed))
