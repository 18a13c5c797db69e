"""Running and partial sums of a round's updates, in fixed point, so that any split of the sum is exact.

A strategy whose server step depends on the round's updates only through weighted sums (FedAvg and the
strategies built on its mean, FedNova, SCAFFOLD, norm bounding with a fixed clip, DP-FedAvg's clipped sum)
does not need the updates themselves: the aggregator adds each accepted update into a running sum and forgets it, and several workers
can each sum their share of the update stream and let a coordinator add the shares.

Why fixed point: float addition is not associative, so three workers' float64 partial sums added together
differ in the last bits from one worker's sum of the same updates, and the result would depend on how the
broker spread the messages. Each update is rounded once to a multiple of 2^-24 (``FRACTION_BITS``) and
summed as int64, which is associative: any split, any order, gives the same bits. The rounding error of the
mean is below 2^-25 per coordinate whatever the number of updates (each weight is >= 1, so the sum of the
weights is at least the number of rounding errors). Each contribution must stay below 2^43 (weight x |value|
< 2^19 = 524,288); then 2^20 (1,048,576) updates cannot overflow int64, and more are refused.

Which strategies can be summed, and what the sum is turned back into for the strategy (``combined``):

| strategy | summed per update | combined as |
|---|---|---|
| fedavg, fedprox, fedavgm, fedadam | n_i·Δ_i, n_i | one update Σn_iΔ_i/Σn_i, weight Σn_i: the strategy's own mean of one |
| fednova | (n_i/τ_i)·Δ_i, n_i, n_i·τ_i | one update τ_eff·ΣpΔ/τ (τ_eff = Σn_iτ_i/Σn_i), one local step |
| scaffold | Δ_i, Δc_i, count k | one update mean Δ, control k·mean Δc (SCAFFOLD scales its mean by 1/N) |
| norm_bounded (fixed clip) | n_i·clip(Δ_i), n_i | as fedavg |
| dp_fedavg | clip_C(Δ_i) (unweighted), k; norms ‖Δ_i‖ | the clipped sum, k and #{‖Δ_i‖ ≤ C}: the strategy adds the noise |

``dp_fedavg``: C is the round's clip (``Strategy.sum_args``; it moves with adaptive clipping), and every
update is clipped *before* it enters any sum, so one device moves a worker's partial sum, and hence the
total, by at most C: the sensitivity the Gaussian noise is calibrated to. The noise is added once, by the
strategy on the total (the coordinator), which also charges the round to the accountant.

Not summable: ``median``, ``trimmed_mean``, ``krum`` and ``norm_bounded`` without a clip (the median norm)
need every update (an order statistic or pairwise distances). ``rule_for`` raises a ValueError naming these. The outlier screen (max_norm_ratio × the round's median norm)
needs the norms only: a sum keeps each device's norm, and an outlier is subtracted exactly afterwards.
"""
from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from training.federated.privacy import CLIPPED_SUM, WITHIN_CLIP
from training.federated.robust import clip_delta, unflatten as unflat
from training.federated.strategies import ClientUpdate, Weights

FRACTION_BITS = 24
_SCALE = float(1 << FRACTION_BITS)
#: |weight × value| × 2^FRACTION_BITS must stay below this: 2^20 such terms fit in int64.
CONTRIBUTION_LIMIT = float(1 << 43)
MAX_TERMS = 1 << 20

#: Strategies that need the individual updates, and why (the error message of ``rule_for``).
INDIVIDUAL = {
    "median": "the coordinate-wise median is an order statistic of all updates",
    "trimmed_mean": "trimming drops each coordinate's extremes across all updates",
    "krum": "Krum scores every update by its distances to the others",
    "norm_bounded": "without a fixed clip it clips to the median norm of all updates",
    "cosine_filter": "it ranks every update by its cosine with the coordinate-wise median of all updates",
}


class SumOverflow(ValueError):
    """An update too large for the fixed-point sum (or too many updates); its reason code is ``too_large``."""

    reason = "too_large"


def to_fixed(values: np.ndarray, weight: float) -> np.ndarray:
    """round(weight × values × 2^24) as int64; raises SumOverflow when a term would not fit."""
    scaled = np.multiply(values, float(weight) * _SCALE, dtype=np.float64)
    if scaled.size and max(float(scaled.max()), -float(scaled.min())) >= CONTRIBUTION_LIMIT:
        raise SumOverflow(f"weight {weight:g} x |value| {float(np.max(np.abs(values))):.3g} exceeds the fixed-point "
                          f"range ({CONTRIBUTION_LIMIT / _SCALE:g})")
    return np.rint(scaled, out=scaled).astype(np.int64)


def from_fixed(total: np.ndarray) -> np.ndarray:
    return total.astype(np.float64) / _SCALE


@dataclass
class PartialSum:
    """The fixed-point sums of some of a round's updates (a worker's share, or all of them).

    ``delta``/``control``: one flat int64 vector each (control only for SCAFFOLD); ``examples`` Σn_i,
    ``steps`` Σn_iτ_i, ``count`` k, ``loss`` Σ train loss (fixed point) over ``losses`` updates that had one,
    ``norms`` each device's delta norm (for the outlier screen: 8 bytes a device, not the update)."""

    size: int
    with_control: bool = False
    delta: np.ndarray = field(default=None)  # type: ignore[assignment]
    control: np.ndarray | None = None
    examples: int = 0
    steps: int = 0
    count: int = 0
    loss: int = 0
    losses: int = 0
    norms: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.delta is None:
            self.delta = np.zeros(self.size, np.int64)
        if self.with_control and self.control is None:
            self.control = np.zeros(self.size, np.int64)

    def add(self, other: "PartialSum", sign: int = 1) -> None:
        """Add (sign -1: subtract) another sum of the same shape: exact, in any order."""
        if other.size != self.size or other.with_control != self.with_control:
            raise ValueError("partial sums of different models cannot be combined")
        twice = [d for d in other.norms if d in self.norms] if sign > 0 else []
        if twice:
            raise ValueError(f"devices counted twice: {sorted(twice)[:5]}")
        self.delta += sign * other.delta
        if self.control is not None and other.control is not None:
            self.control += sign * other.control
        self.examples += sign * other.examples
        self.steps += sign * other.steps
        self.count += sign * other.count
        self.loss += sign * other.loss
        self.losses += sign * other.losses
        if sign > 0:
            self.norms.update(other.norms)
        else:
            for device in other.norms:
                self.norms.pop(device, None)
        if self.count > MAX_TERMS:
            raise SumOverflow(f"more than {MAX_TERMS} updates in one fixed-point sum")

    # ------------------------------------------------------------------------------ bytes for the bus
    def to_bytes(self) -> bytes:
        names = sorted(self.norms)
        arrays = {"delta": self.delta, "ints": np.array([self.examples, self.steps, self.count, self.loss,
                                                         self.losses, int(self.with_control)], np.int64),
                  "names": np.array(names, dtype=np.str_) if names else np.zeros(0, "<U1"),
                  "norms": np.array([self.norms[n] for n in names], np.float64)}
        if self.control is not None:
            arrays["control"] = self.control
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, size: int) -> "PartialSum":
        """Raises ValueError for anything that is not a partial sum of a ``size``-parameter model."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                delta, ints, names, norms = z["delta"], z["ints"], z["names"], z["norms"]
                control = z["control"] if "control" in z.files else None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"not a partial sum ({exc})") from exc
        if delta.dtype != np.int64 or delta.shape != (size,) or ints.shape != (6,) or len(names) != len(norms) or (
                control is not None and (control.dtype != np.int64 or control.shape != (size,))):
            raise ValueError(f"partial sum of the wrong shape (model of {size} parameters)")
        examples, steps, count, loss, losses, with_control = (int(v) for v in ints)
        if bool(with_control) != (control is not None):
            raise ValueError("partial sum's control flag disagrees with its arrays")
        return cls(size, control is not None, delta.copy(), None if control is None else control.copy(), examples,
                   steps, count, loss, losses, {str(n): float(v) for n, v in zip(names, norms)})


class SumRule:
    """How one strategy family folds an update into a PartialSum and turns the sum back into ``combined``."""

    with_control = False

    def weight(self, update: ClientUpdate) -> float:
        return float(update.num_examples)

    def values(self, update: ClientUpdate) -> Weights:
        return update.delta

    def contribution(self, update: ClientUpdate, size: int) -> PartialSum:
        """The update alone as a sum (what ``PartialSum.add`` adds, or subtracts when it is dropped)."""
        raw = np.concatenate([np.ravel(d) for d in update.delta])
        values = self.values(update)
        flat = raw if values is update.delta else np.concatenate([np.ravel(d) for d in values])
        if flat.size != size:
            raise ValueError(f"update of {flat.size} parameters for a sum of {size}")
        part = PartialSum(size, self.with_control, to_fixed(flat, self.weight(update)))
        if self.with_control:
            part.control = to_fixed(np.concatenate([np.ravel(c) for c in update.control_delta]), 1.0)
        part.examples, part.steps, part.count = update.num_examples, update.num_examples * update.local_steps, 1
        loss = update.meta.get("train_loss")
        if loss is not None and math.isfinite(loss):
            part.loss, part.losses = round(loss * _SCALE), 1
        wide = raw.astype(np.float64)
        part.norms[update.device] = float(np.sqrt(wide @ wide))  # robust.delta_norm, in one pass
        return part

    def mean(self, total: PartialSum, like: Weights) -> Weights:
        """Σ weight·values / Σ weight, as float32 tensors shaped like the model."""
        return unflat(from_fixed(total.delta) / total.examples, like)

    def combined(self, total: PartialSum, like: Weights) -> list[ClientUpdate]:
        if total.count == 0:
            return []
        return [ClientUpdate("partial-sum", self.mean(total, like), total.examples, 1, meta=loss_meta(total))]


class FedNovaRule(SumRule):
    def weight(self, update: ClientUpdate) -> float:
        return update.num_examples / update.local_steps

    def mean(self, total: PartialSum, like: Weights) -> Weights:
        tau_eff = total.steps / total.examples
        return unflat(from_fixed(total.delta) * (tau_eff / total.examples), like)


class ScaffoldRule(SumRule):
    with_control = True

    def weight(self, update: ClientUpdate) -> float:
        return 1.0

    def combined(self, total: PartialSum, like: Weights) -> list[ClientUpdate]:
        if total.count == 0:
            return []
        mean = unflat(from_fixed(total.delta) / total.count, like)
        control = unflat(from_fixed(total.control), like)  # k x mean: SCAFFOLD multiplies its mean by 1/N
        return [ClientUpdate("partial-sum", mean, total.count, 1, control, loss_meta(total))]


class ClippedRule(SumRule):
    """Norm bounding with a fixed clip: clip each delta on arrival, then as FedAvg."""

    def __init__(self, clip: float) -> None:
        self.clip = clip

    def values(self, update: ClientUpdate) -> Weights:
        return clip_delta(update.delta, self.clip)


class DPClippedRule(SumRule):
    """DP-FedAvg: each delta clipped to the round's C and summed unweighted; the strategy adds the noise."""

    def __init__(self, clip: float) -> None:
        self.clip = clip

    def weight(self, update: ClientUpdate) -> float:
        return 1.0

    def values(self, update: ClientUpdate) -> Weights:
        return clip_delta(update.delta, self.clip)

    def combined(self, total: PartialSum, like: Weights) -> list[ClientUpdate]:
        """One update that stands for the clipped sum (float64: the noise is added before any rounding)."""
        if total.count == 0:
            return []
        flat, tensors, pos = from_fixed(total.delta), [], 0
        for w in like:
            tensors.append(flat[pos:pos + w.size].reshape(w.shape))
            pos += w.size
        within = sum(norm <= self.clip for norm in total.norms.values())
        return [ClientUpdate("partial-sum", tensors, total.count, 1,
                             meta={**loss_meta(total), CLIPPED_SUM: total.count, WITHIN_CLIP: within})]


def rule_for(strategy: str, args: dict[str, Any] | None = None) -> SumRule:
    """The sum rule of a strategy by its config name; ValueError (saying what to use) if it needs every update."""
    args = args or {}
    if strategy in ("fedavg", "fedprox", "fedavgm", "fedadam"):
        return SumRule()
    if strategy == "fednova":
        return FedNovaRule()
    if strategy == "scaffold":
        return ScaffoldRule()
    if strategy == "norm_bounded" and args.get("clip") is not None:
        return ClippedRule(float(args["clip"]))
    if strategy == "dp_fedavg":
        if args.get("clip") is None:
            raise ValueError("dp_fedavg's sum rule needs the round's clip (the strategy's sum_args)")
        return DPClippedRule(float(args["clip"]))
    why = INDIVIDUAL.get(strategy, "it is not known to the partial-sum rules")
    raise ValueError(f"strategy {strategy!r} cannot run on partial sums: {why}. Aggregator workers forward its "
                     "individual updates to the coordinator instead (training.federated.forwarded_updates); "
                     "summable: fedavg, fedprox, fedavgm, fedadam, fednova, scaffold, dp_fedavg, norm_bounded "
                     "with clip=C")


class RunningSum:
    """One round's sum in an aggregator: the fixed-point total, where each device's update is in the log (to
    subtract an outlier exactly), and the updates delivered but too large for the fixed-point range."""

    def __init__(self, rule: SumRule, size: int) -> None:
        self.rule, self.size = rule, size
        self.total = PartialSum(size, rule.with_control)
        self.offsets: dict[str, int] = {}
        self.oversized: dict[str, float] = {}

    def add(self, update: ClientUpdate, offset: int) -> None:
        try:
            self.total.add(self.rule.contribution(update, self.size))
        except SumOverflow:  # delivered, but outside the fixed-point range: the outlier screen decides
            wide = np.concatenate([np.ravel(d) for d in update.delta]).astype(np.float64)
            self.oversized[update.device] = float(np.sqrt(wide @ wide))
        self.offsets[update.device] = offset

    def screen(self, ratio: float | None, reread: Callable[[str], ClientUpdate]) -> tuple[list[str], list[str]]:
        """The outlier screen on the norms: dropped devices (an update in the sum is ``reread`` from the log
        and subtracted exactly) and oversized ones that are not outliers (left out, too large to sum)."""
        dropped = outliers({**self.total.norms, **self.oversized}, ratio)
        for device in dropped:
            if device not in self.oversized:
                self.total.add(self.rule.contribution(reread(device), self.size), sign=-1)
        return dropped, sorted(set(self.oversized) - set(dropped))


def summable(strategy: str, args: dict[str, Any] | None = None) -> bool:
    try:
        rule_for(strategy, args)
    except ValueError:
        return False
    return True


def outliers(norms: dict[str, float], ratio: float | None) -> list[str]:
    """Devices whose norm exceeds ``ratio`` × the median norm (the engine's screen; needs >= 3 updates)."""
    if ratio is None or len(norms) < 3:
        return []
    limit = ratio * float(np.median(list(norms.values())))
    return sorted(d for d, n in norms.items() if n > limit)


def loss_meta(total: PartialSum) -> dict[str, Any]:
    return {"train_loss": float(from_fixed(np.array([total.loss])) [0] / total.losses) if total.losses else None}


def model_size(weights: Sequence[np.ndarray]) -> int:
    return int(sum(np.size(w) for w in weights))
