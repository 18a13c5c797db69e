"""Malicious devices for the simulator: what the robust strategies must withstand.

An attack is a spec string: ``sign_flip`` (send -delta), ``scale:K`` (send K x delta), ``gaussian:S``
(send noise of standard deviation S instead of a delta), ``label_flip`` (train on labels rotated to the
next class: the data poisoning a compromised recorder could do), ``replacement:K`` (label flip, and the
delta boosted by K so that it survives averaging: model replacement in the manner of Bagdasaryan et al.
2020). Attackers are a fixed share of the devices, drawn once per seed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from training.federated.strategies import ClientUpdate

ATTACKS = ("sign_flip", "scale", "gaussian", "label_flip", "replacement")


@dataclass(frozen=True)
class Attack:
    kind: str
    strength: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> "Attack":
        kind, _, arg = spec.partition(":")
        defaults = {"sign_flip": 1.0, "scale": 10.0, "gaussian": 1.0, "label_flip": 1.0, "replacement": 10.0}
        if kind not in defaults:
            raise ValueError(f"attack {spec!r} unknown; use one of {', '.join(ATTACKS)} (e.g. scale:10)")
        try:
            strength = float(arg) if arg else defaults[kind]
        except ValueError:
            raise ValueError(f"attack {spec!r}: the strength after ':' must be a number") from None
        return cls(kind, strength)

    @property
    def poisons_data(self) -> bool:
        return self.kind in ("label_flip", "replacement")

    def poison_labels(self, labels: np.ndarray, n_classes: int) -> np.ndarray:
        return ((labels + 1) % n_classes).astype(labels.dtype) if self.poisons_data else labels

    def corrupt(self, update: ClientUpdate, rng: np.random.Generator) -> ClientUpdate:
        if self.kind == "sign_flip":
            delta = [-d for d in update.delta]
        elif self.kind in ("scale", "replacement"):
            delta = [(self.strength * d).astype(np.float32) for d in update.delta]
        elif self.kind == "gaussian":
            delta = [rng.normal(0.0, self.strength, size=d.shape).astype(np.float32) for d in update.delta]
        else:  # label_flip: the poisoned training already did the harm
            return update
        return replace(update, delta=delta, meta={**update.meta, "attacker": self.kind})


def choose_attackers(n_devices: int, share: float, seed: int) -> set[int]:
    if not 0 <= share < 1:
        raise ValueError(f"attacker share must be in [0, 1), got {share}")
    n = int(round(share * n_devices))
    return set(np.random.default_rng([seed, 7]).choice(n_devices, n, replace=False).tolist())
