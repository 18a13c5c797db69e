"""Byzantine-robust aggregation: strategies that a few broken or malicious devices cannot steer.

Same interface as every strategy (global weights + client updates -> new weights). Each works on the
deltas flattened into one vector per device, so "coordinate" means one parameter of the whole model.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from training.federated.strategies import ClientUpdate, Strategy, Weights, add, weighted_mean


def flatten(delta: Weights) -> np.ndarray:
    return np.concatenate([d.ravel() for d in delta]).astype(np.float64)


def unflatten(vector: np.ndarray, like: Weights) -> Weights:
    out, pos = [], 0
    for w in like:
        out.append(vector[pos:pos + w.size].reshape(w.shape).astype(np.float32))
        pos += w.size
    return out


class CoordinateMedian(Strategy):
    """Yin et al. 2018: the coordinate-wise median of the deltas (robust to < 50 % attackers)."""

    name = "median"

    def combine(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        stacked = np.stack([flatten(u.delta) for u in updates])
        return add(global_weights, unflatten(np.median(stacked, axis=0), global_weights))


class TrimmedMean(Strategy):
    """Yin et al. 2018: per coordinate, drop the ``trim`` share of largest and smallest values, average the rest."""

    name = "trimmed_mean"

    def __init__(self, trim: float = 0.2) -> None:
        if not 0 <= trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {trim}")
        self.trim = trim

    def combine(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        stacked = np.sort(np.stack([flatten(u.delta) for u in updates]), axis=0)
        k = int(np.floor(self.trim * len(updates)))
        kept = stacked[k:len(updates) - k] if len(updates) - 2 * k >= 1 else stacked
        return add(global_weights, unflatten(kept.mean(axis=0), global_weights))


class Krum(Strategy):
    """Blanchard et al. 2017: score each delta by the summed squared distances to its n - f - 2 nearest
    others; Krum takes the best one, Multi-Krum (``multi`` > 1) averages the ``multi`` best."""

    name = "krum"

    def __init__(self, byzantine: int = 1, multi: int = 1) -> None:
        if byzantine < 0 or multi < 1:
            raise ValueError("byzantine must be >= 0 and multi >= 1")
        self.byzantine, self.multi = byzantine, multi

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        n = len(vectors)
        sq = np.sum((vectors[:, None, :] - vectors[None, :, :]) ** 2, axis=2)
        nearest = max(1, n - self.byzantine - 2)
        return np.array([np.sort(np.delete(sq[i], i))[:nearest].sum() for i in range(n)]) if n > 1 else np.zeros(1)

    def combine(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        vectors = np.stack([flatten(u.delta) for u in updates])
        best = np.argsort(self.scores(vectors), kind="stable")[:min(self.multi, len(updates))]
        return add(global_weights, weighted_mean([updates[i].delta for i in best],
                                                 [updates[i].num_examples for i in best]))


class NormBounded(Strategy):
    """Sun et al. 2019: clip every delta to L2 norm ``clip``, then the sample-weighted mean.

    ``clip=None`` clips to the median norm of the round's deltas instead: honest norms shrink as training
    converges, and a fixed bound chosen on early rounds then lets every attacker send a delta several times
    longer than an honest one; the median stays an honest norm while fewer than half the devices attack."""

    name = "norm_bounded"

    def __init__(self, clip: float | None = None) -> None:
        if clip is not None and clip <= 0:
            raise ValueError("clip must be positive, or None for the median norm of each round")
        self.clip = clip

    def combine(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        bound = self.clip if self.clip is not None else float(np.median([delta_norm(u.delta) for u in updates]))
        clipped = [clip_delta(u.delta, bound) for u in updates]
        return add(global_weights, weighted_mean(clipped, [u.num_examples for u in updates]))


class CosineFilter(Strategy):
    """Keep the ``n - byzantine`` deltas whose direction agrees most with the coordinate-wise median of the round,
    clip them to the round's median norm, take their sample-weighted mean.

    Why: on non-IID patients honest deltas differ mostly in length, so Krum's Euclidean scores pick short deltas
    whatever their sign and let sign-flipped ones in (the 30 % sign-flip cell, where Multi-Krum lost most). A
    flipped, noisy or label-flipped delta points away from the median direction, which stays honest while fewer
    than half the devices attack (cf. the cosine trust score of FLTrust, Cao et al. 2021, with the median as the
    server's reference instead of a root dataset); the median-norm clip bounds a boosted delta that passes.

    ``memory`` > 0 ranks by each device's trust instead of this round's cosine alone: trust ← memory · trust +
    (1 − memory) · cosine, per device name (a device's first round: its cosine). An attacker is the same device
    every round, and a flipped delta that happens to point along the median in one round (its own patient's
    delta opposed the last step) still carries the earlier rounds' disagreement; history is what defeats
    attacks that vary over time (Karimireddy et al. 2021). The trust table is checkpointed with the strategy."""

    name = "cosine_filter"

    def __init__(self, byzantine: int = 1, memory: float = 0.0) -> None:
        if byzantine < 0 or not 0 <= memory < 1:
            raise ValueError(f"byzantine must be >= 0 (got {byzantine}) and memory in [0, 1) (got {memory})")
        self.byzantine, self.memory = byzantine, memory
        self.trust: dict[str, float] = {}

    def agreement(self, vectors: np.ndarray) -> np.ndarray:
        """Each row's cosine with the coordinate-wise median of the rows (0 for a zero row or median)."""
        reference = np.median(vectors, axis=0)
        norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference)
        return np.divide(vectors @ reference, norms, out=np.zeros(len(vectors)), where=norms > 0)

    def rank_scores(self, devices: Sequence[str], cosines: np.ndarray) -> np.ndarray:
        """This round's cosines, or (``memory`` > 0) each device's updated trust, which is kept for later rounds."""
        if not self.memory:
            return cosines
        for name, c in zip(devices, cosines):
            old = self.trust.get(name)
            self.trust[name] = float(c) if old is None else self.memory * old + (1 - self.memory) * float(c)
        return np.array([self.trust[name] for name in devices])

    def combine(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        vectors = np.stack([flatten(u.delta) for u in updates])
        scores = self.rank_scores([u.device for u in updates], self.agreement(vectors))
        best = np.argsort(-scores, kind="stable")[:max(1, len(updates) - self.byzantine)]
        bound = float(np.median(np.linalg.norm(vectors, axis=1)))
        kept = [clip_delta(updates[i].delta, bound) for i in best]
        return add(global_weights, weighted_mean(kept, [updates[i].num_examples for i in best]))

    def state(self) -> dict:
        names = sorted(self.trust)
        return {"trust_devices": [np.array(names, dtype=str)],
                "trust_scores": [np.array([self.trust[n] for n in names], np.float64)]}

    def load_state(self, state: dict) -> None:
        names, scores = state.get("trust_devices"), state.get("trust_scores")
        self.trust = ({str(n): float(v) for n, v in zip(names[0].tolist(), scores[0].tolist())}
                      if names and scores else {})


def delta_norm(delta: Weights) -> float:
    """L2 norm of a whole delta (all tensors as one vector): what clipping and outlier checks compare."""
    return float(np.sqrt(sum(np.sum(d.astype(np.float64) ** 2) for d in delta)))


def clip_delta(delta: Weights, clip: float) -> Weights:
    """Scale ``delta`` down to L2 norm ``clip`` when it is longer (the DP and norm-bounding primitive)."""
    norm = delta_norm(delta)
    factor = min(1.0, clip / norm) if norm > 0 else 1.0
    return [(d * factor).astype(np.float32) for d in delta]
