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

Release "sums" (session 9) spends the budget on the centres alone: each hospital releases only Σu over the k
columns the model reads (sensitivity sqrt(k)), and the scale is a public share of the public range. Why: with 30
features and 82-159 records per hospital the noisy sums of squares were useless (the std fell to the floor for most
features) while they doubled the released numbers; after ``log-offset`` (``tabular_features``) every feature has the
same public range, so one public share fits all within a small factor.
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
RELEASES = ("sums-squares", "sums")


@dataclass(frozen=True)
class StatsOption:
    """A named way to get the statistics: release kind, its noise multiplier z, the public scale share ("sums")."""

    release: str
    noise_multiplier: float
    scale_share: float = PUBLIC_SCALE_SHARE


#: The DP run's standardisation statistics by name: "dp-release" (session 8: sums and sums of squares, z = 5),
#: "public-bounds" (the public range alone: no record read, no ε spent) and "dp-centres" (session 9: sums only,
#: z = 10, scale 1/10 of the public range; the release of the pipeline chosen by ``tabular_dp_selection``).
STATS_OPTIONS = {"dp-release": StatsOption("sums-squares", 5.0), "public-bounds": StatsOption("sums", math.inf),
                 "dp-centres": StatsOption("sums", 10.0, 0.1)}


@dataclass(frozen=True)
class DpStats:
    """How the statistics are released: Gaussian noise multiplier z per hospital (``math.inf``: nothing is
    released, ``public_mean_std``) and the seed of the noise."""

    noise_multiplier: float
    seed: int = 0
    #: "sums-squares" (Σu and Σu² per column) or "sums" (Σu only; the scale is ``scale_share`` of the range)
    release: str = "sums-squares"
    scale_share: float = PUBLIC_SCALE_SHARE

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ValueError("DP statistics need a noise multiplier > 0 (math.inf: public range only)")
        if self.release not in RELEASES or not 0 < self.scale_share <= 1:
            raise ValueError(f"release one of {', '.join(RELEASES)} and 0 < scale_share <= 1, not {self}")

    @classmethod
    def named(cls, option: str, seed: int = 0) -> DpStats:
        """The statistics of a ``STATS_OPTIONS`` name (what the bench and the docs refer to)."""
        if option not in STATS_OPTIONS:
            raise ValueError(f"statistics option {option!r} unknown; one of {', '.join(STATS_OPTIONS)}")
        o = STATS_OPTIONS[option]
        return cls(o.noise_multiplier, seed, o.release, o.scale_share)


def sensitivity(features: int, release: str = "sums-squares") -> float:
    """L2 change of the released vector ((Σu, Σu²), or Σu alone) when one record with u in [0, 1]^features is
    added or removed."""
    return math.sqrt((2 if release == "sums-squares" else 1) * features)


def public_range(transform, bounds: np.ndarray = UPPER_BOUNDS) -> tuple[np.ndarray, np.ndarray]:
    """(low, width) of every feature after the fixed transform: [T(0), T(U_j)]."""
    low, high = transform(np.zeros_like(bounds)), transform(bounds)
    return low, high - low


def public_mean_std(transform, bounds: np.ndarray = UPPER_BOUNDS,
                    share: float = PUBLIC_SCALE_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std from the public bounds alone: no record is read, so nothing is released and no ε is spent."""
    low, width = public_range(transform, bounds)
    return (low + width / 2).astype(np.float32), (width * share).astype(np.float32)


def private_mean_std(x: np.ndarray, hospital: np.ndarray, transform, dp: DpStats,
                     bounds: np.ndarray = UPPER_BOUNDS) -> tuple[np.ndarray, np.ndarray]:
    """Pooled mean and std of the transformed features ``transform(x)`` from every hospital's noisy release.

    ``hospital`` gives each row's hospital (rows with -1 are not anyone's records and are not used); ``bounds``
    are the public upper bounds of ``x``'s columns (a subset of ``UPPER_BOUNDS`` when the model reads fewer)."""
    if x.shape[1] != len(bounds):
        raise ValueError(f"{x.shape[1]} features; the public bounds cover {len(bounds)}")
    if math.isinf(dp.noise_multiplier):
        return public_mean_std(transform, bounds, dp.scale_share)
    low, width = public_range(transform, bounds)
    rng = make_noise("seeded", [dp.seed, 17])  # simulated hospitals: reproducible (edge_runtime.dp_noise)
    scale = dp.noise_multiplier * sensitivity(x.shape[1], dp.release)
    sums, squares, count = np.zeros(x.shape[1]), np.zeros(x.shape[1]), 0
    for h in np.unique(hospital[hospital >= 0]):
        u = (np.clip(transform(x[hospital == h]), low, low + width) - low) / width
        sums += u.sum(axis=0) + rng.normal(0.0, scale, x.shape[1])
        if dp.release == "sums-squares":
            squares += (u ** 2).sum(axis=0) + rng.normal(0.0, scale, x.shape[1])
        count += len(u)
    mean_u = np.clip(sums / count, 0.0, 1.0)
    if dp.release == "sums":
        return (low + width * mean_u).astype(np.float32), (width * dp.scale_share).astype(np.float32)
    std_u = np.sqrt(np.clip(squares / count - mean_u ** 2, MIN_STD_SHARE ** 2, 0.25))
    return (low + width * mean_u).astype(np.float32), (width * std_u).astype(np.float32)
