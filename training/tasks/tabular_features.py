"""The tabular task's public feature facts: which columns a model reads and the fixed map applied to each record.

Why a module: the DP run may read a subset of the 30 columns (fewer weights for DP-SGD's noise, fewer statistics to
release) and map them through log(x + a_j), where the offset a_j = ``OFFSET_SHARE`` · U_j is fixed by the public
upper bound U_j of the feature's unit (``tabular_dp_stats.UPPER_BOUNDS``), never by the records. log(1 + x) leaves
the six shape ratios (< 1) almost linear, so their spread is a tiny share of the public range; log(x + a) puts every
feature on the same log scale (a public range of log(1 + 1/OFFSET_SHARE) ≈ 4.6 for all 30), which is what lets a
public share of that range serve as the scale and the DP release spend its budget on the centres alone.

Column sets follow the WDBC layout (10 quantities as "mean", "standard error" and "worst" = mean of the three largest
nuclei): a set is a block of the documented layout, a structural choice among three, not a per-feature selection.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from training.tasks.tabular_dp_stats import UPPER_BOUNDS

#: name -> column indices (into the 30 features of ``load_breast_cancer``), by the documented layout.
FEATURE_SETS = {"all": tuple(range(30)), "mean": tuple(range(10)), "worst": tuple(range(20, 30))}
TRANSFORMS = ("standard", "log1p", "log-offset")
#: a_j = OFFSET_SHARE · U_j: two decades below the public bound (fixed before the selection; docs/tasks.md).
OFFSET_SHARE = 0.01


def columns_of(features: str) -> np.ndarray:
    if features not in FEATURE_SETS:
        raise ValueError(f"feature set {features!r} unknown; one of {', '.join(FEATURE_SETS)}")
    return np.asarray(FEATURE_SETS[features])


def offsets(columns: np.ndarray) -> np.ndarray:
    """The public offsets a_j of ``log-offset`` for these columns."""
    return (OFFSET_SHARE * UPPER_BOUNDS[columns]).astype(np.float32)


def feature_map(transform: str, columns: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The fixed per-feature map of ``transform`` on records restricted to ``columns`` (every hospital and device
    applies it alone; it reads no record but the one it maps)."""
    if transform not in TRANSFORMS:
        raise ValueError(f"feature transform {transform!r} unknown; one of {', '.join(TRANSFORMS)}")
    if transform == "log1p":
        return np.log1p
    if transform == "log-offset":
        return partial(_log_offset, a=offsets(columns))
    return _identity


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _log_offset(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.log(x + a)
