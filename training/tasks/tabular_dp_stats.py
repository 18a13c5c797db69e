"""Differentially private standardisation statistics for the tabular task (the features' mean and std).

Why: the DP-SGD run's ε covered the gradients only; the mean and std that standardise the features were computed
from the hospitals' records without noise and shipped in the model's contract. Here every hospital releases, once,
the per-feature sums and sums of squares of its own records with the Gaussian mechanism, and the pooled statistics
are the hospitals' noisy sums added up and divided by the total record count (the n-weighted combination of their
releases; the counts were public already as the FedAvg weights).

Each record's features are first passed through the task's fixed transform, clipped to a public range
[T(0), T(U_j)] and scaled to u_j in [0, 1]. ``UPPER_BOUNDS`` (U_j) is fixed a priori from each quantity's unit in
the WDBC documentation (sizes in pixels of the digitised image, texture a grey-level standard deviation, six
dimensionless shape ratios), one order of magnitude per quantity, never from the records. Adding or removing one
record changes the vector (Σu, Σu²) of 2·30 numbers by at most sqrt(2·30) in L2, so noise of std z·sqrt(60) on
every sum is ``GaussianDpEvent(z)`` for that hospital's records, which the DP-SGD accountant composes with its
steps (``dpsgd_epsilon(..., release_noise=z)`` in ``training.federated.dpsgd``), so one ε covers both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_runtime.dp_noise import make_noise

#: Public per-feature upper bound, in the raw units, by quantity (mean, standard error and worst use the same):
#: radius < 100 px, texture (grey-level std) < 100, perimeter < 1000 px, area < 10^4 px², the six shape ratios < 1.
QUANTITY_BOUNDS = (100.0, 100.0, 1000.0, 1e4, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
UPPER_BOUNDS = np.asarray(QUANTITY_BOUNDS * 3)
#: Smallest std the pooled release may report, as a share of the public range (a noisy sum of squares can fall
#: below the squared mean; the floor keeps the standardisation finite).
MIN_STD_SHARE = 0.05
#: Public statistics (``DpStats(math.inf)``, nothing released): centre = middle of the public range, scale = this
#: share of its width; 1/2 and 1/4 were fixed before any run, 1/4 scored better (tasks-tabular-dpstats-grid.txt).
PUBLIC_SCALE_SHARE = 0.25
#: The DP run's standardisation statistics by name -> noise multiplier of their release: "dp-release" (every
#: hospital's Gaussian release, z chosen on the validation patients) or "public-bounds" (the public range alone:
#: no record read, no ε spent, DP-SGD keeps the whole budget). Validation grid: dp-release 86.7 %, public 69.3 %.
STATS_OPTIONS = {"dp-release": 5.0, "public-bounds": math.inf}


@dataclass(frozen=True)
class DpStats:
    """How the statistics are released: Gaussian noise multiplier z per hospital (``math.inf``: nothing is
    released, ``public_mean_std``) and the seed of the noise."""

    noise_multiplier: float
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ValueError("DP statistics need a noise multiplier > 0 (math.inf: public range only)")

    @classmethod
    def named(cls, option: str, seed: int = 0) -> DpStats:
        """The statistics of a ``STATS_OPTIONS`` name (what the bench and the docs refer to)."""
        if option not in STATS_OPTIONS:
            raise ValueError(f"statistics option {option!r} unknown; one of {', '.join(STATS_OPTIONS)}")
        return cls(STATS_OPTIONS[option], seed)


def sensitivity(features: int) -> float:
    """L2 change of (Σu, Σu²) when one record with u in [0, 1]^features is added or removed."""
    return math.sqrt(2 * features)


def public_range(transform) -> tuple[np.ndarray, np.ndarray]:
    """(low, width) of every feature after the fixed transform: [T(0), T(U_j)]."""
    low, high = transform(np.zeros_like(UPPER_BOUNDS)), transform(UPPER_BOUNDS)
    return low, high - low


def public_mean_std(transform) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std from the public bounds alone: no record is read, so nothing is released and no ε is spent."""
    low, width = public_range(transform)
    return (low + width / 2).astype(np.float32), (width * PUBLIC_SCALE_SHARE).astype(np.float32)


def private_mean_std(x: np.ndarray, hospital: np.ndarray, transform, dp: DpStats) -> tuple[np.ndarray, np.ndarray]:
    """Pooled mean and std of the transformed features ``transform(x)`` from every hospital's noisy release.

    ``hospital`` gives each row's hospital (rows with -1 are not anyone's records and are not used)."""
    if x.shape[1] != len(UPPER_BOUNDS):
        raise ValueError(f"{x.shape[1]} features; the public bounds cover {len(UPPER_BOUNDS)}")
    if math.isinf(dp.noise_multiplier):
        return public_mean_std(transform)
    low, width = public_range(transform)
    rng = make_noise("seeded", [dp.seed, 17])  # simulated hospitals: reproducible (edge_runtime.dp_noise)
    scale = dp.noise_multiplier * sensitivity(x.shape[1])
    sums, squares, count = np.zeros(x.shape[1]), np.zeros(x.shape[1]), 0
    for h in np.unique(hospital[hospital >= 0]):
        u = (np.clip(transform(x[hospital == h]), low, low + width) - low) / width
        sums += u.sum(axis=0) + rng.normal(0.0, scale, x.shape[1])
        squares += (u ** 2).sum(axis=0) + rng.normal(0.0, scale, x.shape[1])
        count += len(u)
    mean_u = np.clip(sums / count, 0.0, 1.0)
    std_u = np.sqrt(np.clip(squares / count - mean_u ** 2, MIN_STD_SHARE ** 2, 0.25))
    return (low + width * mean_u).astype(np.float32), (width * std_u).astype(np.float32)
