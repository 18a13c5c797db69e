"""Federated settings of the tabular task (DP-SGD at ε = 1, δ = 1e-6, and plain FedAvg), chosen by cross-validation
over the non-test patients.

Why: the first DP-SGD settings (q 0.1, 10 rounds, lr 1.0, clip 0.1) were picked by hand for the MLP and kept for
the softmax model the model selection then chose; this re-tunes them for the model the task ships, with the same
rule-first protocol as ``tabular_selection`` and on the same patients (train + val of the four hospitals; the test
split is never read).

Protocol, fixed before any result was seen (docs/tasks.md):
- Every candidate is the real thing: FedAvg over the four hospitals (``run_task_federated``, "hospitals"
  partition of the fold's fitting patients, each hospital its own patients), DP-SGD inside each hospital with the
  project's ``LocalTrainer``, σ calibrated by dp-accounting's PLD accountant so that the candidate's steps cost
  exactly ε = 1 at δ = 1e-6 (``calibrate_noise``). What changes: the sampling rate q (batch ≈ q·n), the rounds
  (one local epoch = round(1/q) steps each), the step size and the clip norm.
- Score: accuracy of the held-out fold at the **last** round (no round is chosen on the fold that scores it),
  5 folds x ``repeats`` stratified (``tabular_selection.cv_folds``), DP noise drawn from seed ``fold``.
- Rule: best mean CV accuracy; candidates within 0.5 percentage points count as tied and the one with the fewest
  DP-SGD steps wins (less computation on the hospitals' side, fewer rounds on the wire).

The same protocol, without DP, chooses the local training of the strategy table (``FedCandidate``: local epochs,
batch, step, rounds; FedAvg over the four hospitals; tie: fewest local steps x rounds), so both federated settings
of the bench come out of one procedure on the same folds.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace

import numpy as np

from training.tasks.tabular_selection import (
    FOLDS,
    TIE_TOLERANCE,
    cv_folds,
    training_side,
)

log = logging.getLogger(__name__)

EPSILON, DELTA = 1.0, 1e-6
DP_REPEATS = 1


@dataclass(frozen=True)
class DpCandidate:
    """One DP-SGD setting: Poisson rate q, rounds (one local epoch each), SGD step, per-record clip C."""

    rate: float
    rounds: int
    learning_rate: float
    clip: float

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 1 or self.rounds < 1 or self.learning_rate <= 0 or self.clip <= 0:
            raise ValueError(f"DP candidate {self}: 0 < rate <= 1, rounds >= 1, learning_rate > 0, clip > 0")

    @property
    def steps(self) -> int:
        return self.rounds * max(1, round(1 / self.rate))

    @property
    def label(self) -> str:
        return f"q {self.rate:g}, {self.rounds} rounds, lr {self.learning_rate:g}, C {self.clip:g}"

    def noise(self) -> float:
        """σ that makes this candidate's steps cost exactly ε at δ (dp-accounting's PLD accountant)."""
        return noise_for(self)

    def local(self, noise: float):
        from training.federated.local_training import LocalConfig

        return LocalConfig(epochs=1, learning_rate=self.learning_rate, dpsgd_clip=self.clip, dpsgd_rate=self.rate,
                           dpsgd_noise=noise)


#: The shipped setting before this selection (first row) and the grid around it: larger batches (q 0.25, 0.5),
#: fewer and more rounds, smaller and larger steps, a 10x clip.
DP_CANDIDATES = (
    DpCandidate(0.1, 10, 1.0, 0.1),
    DpCandidate(0.1, 10, 3.0, 0.1),
    DpCandidate(0.1, 20, 1.0, 0.1),
    DpCandidate(0.25, 10, 1.0, 0.1),
    DpCandidate(0.25, 10, 3.0, 0.1),
    DpCandidate(0.25, 20, 3.0, 0.1),
    DpCandidate(0.5, 10, 3.0, 0.1),
    DpCandidate(0.5, 20, 3.0, 0.1),
    DpCandidate(0.5, 10, 10.0, 0.1),
    DpCandidate(0.25, 10, 0.3, 1.0),
)


@dataclass(frozen=True)
class FedCandidate:
    """Local training of the non-private strategy table: local epochs, mini-batch, SGD step, rounds."""

    epochs: int
    batch_size: int
    learning_rate: float
    rounds: int

    @property
    def steps(self) -> int:
        """Local epochs x rounds: the tie-break (mini-batches per epoch are the same for every candidate size)."""
        return self.epochs * self.rounds

    @property
    def label(self) -> str:
        return f"{self.epochs} local epochs, batch {self.batch_size}, lr {self.learning_rate:g}, {self.rounds} rounds"

    def noise(self) -> float:
        return 0.0

    def local(self, noise: float = 0.0):
        from training.federated.local_training import LocalConfig

        return LocalConfig(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate)


#: The shipped strategy-table setting (first row) and steps around it.
FED_CANDIDATES = (
    FedCandidate(3, 16, 0.2, 25),
    FedCandidate(1, 16, 0.2, 25),
    FedCandidate(5, 16, 0.2, 25),
    FedCandidate(3, 16, 0.05, 25),
    FedCandidate(3, 16, 0.5, 25),
    FedCandidate(3, 16, 0.2, 50),
)


def noise_for(candidate: DpCandidate, epsilon: float = EPSILON, delta: float = DELTA) -> float:
    from training.federated.dpsgd import calibrate_noise

    return calibrate_noise(epsilon, delta, candidate.rate, candidate.steps)


def _fold_accuracy(task, x, y, persons, fit, held, candidate, noise: float, seed: int) -> float:
    from training.federated.simulation import FederatedConfig
    from training.tasks.base import TaskSplit
    from training.tasks.federated import run_task_federated
    from training.tasks.tabular import FEATURES_INPUT

    split = lambda rows: TaskSplit({FEATURES_INPUT: x[rows]}, y[rows], persons[rows])
    fed = FederatedConfig(rounds=candidate.rounds, partition="hospitals", seed=seed, local=candidate.local(noise))
    trained = run_task_federated(task, split(fit), split(held), fed)
    return float(trained.history[-1]["val_accuracy"])


def cross_validate_dp(candidates: tuple = DP_CANDIDATES, repeats: int = DP_REPEATS, seed: int = 0) -> list[dict]:
    """One row per candidate: σ (0 for a ``FedCandidate``), steps, the fold accuracies (last round), mean, std."""
    from training.tasks.tabular import TabularTask

    task = TabularTask()
    x, y, persons = training_side()
    folds = cv_folds(y, repeats=repeats, seed=seed)
    rows = []
    for c in candidates:
        noise = c.noise()
        scores = [_fold_accuracy(task, x, y, persons, fit, held, c, noise, seed * 100 + k)
                  for k, (fit, held) in enumerate(folds)]
        rows.append({**asdict(c), "label": c.label, "steps": c.steps, "noise_multiplier": noise,
                     "folds": scores, "mean": float(np.mean(scores)), "std": float(np.std(scores))})
        log.info("CV %s (σ %.3f): %.4f ± %.4f", c.label, noise, rows[-1]["mean"], rows[-1]["std"])
    return rows


def choose_dp(rows: list[dict], tolerance: float = TIE_TOLERANCE) -> dict:
    """The stated rule: best mean CV accuracy; within ``tolerance`` of it, fewest DP-SGD steps."""
    best = max(r["mean"] for r in rows)
    return min((r for r in rows if r["mean"] >= best - tolerance), key=lambda r: (r["steps"], -r["mean"]))


def select_federated_settings(private: bool, quick: bool = False, seed: int = 0) -> dict:
    """The whole protocol for DP-SGD (``private``) or plain FedAvg; ``quick`` (a smoke run): the first two
    candidates, 2 rounds each."""
    grid = DP_CANDIDATES if private else FED_CANDIDATES
    candidates = tuple(replace(c, rounds=2) for c in grid[:2]) if quick else grid
    rows = cross_validate_dp(candidates, seed=seed)
    winner = choose_dp(rows)
    fields = ("rate", "rounds", "learning_rate", "clip") if private else ("epochs", "batch_size", "learning_rate",
                                                                           "rounds")
    return {"private": private, "epsilon": EPSILON if private else None, "delta": DELTA if private else None,
            "folds": FOLDS, "repeats": DP_REPEATS, "seed": seed, "tie_tolerance": TIE_TOLERANCE,
            "score": "held-out fold accuracy at the last round", "candidates": rows, "winner": winner["label"],
            "winner_settings": {k: winner[k] for k in fields}}


def main(argv: list[str] | None = None) -> int:
    """``python -m training.tasks.tabular_federated_selection --json FILE``: both selections, one JSON (the bench
    reads it from ``bench/results/tasks-tabular-selection.json`` and records it beside its runs)."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="bench/results/tasks-tabular-selection.json")
    parser.add_argument("--only", choices=("dp", "fedavg"), help="one of the two selections (default: both)")
    parser.add_argument("--quick", action="store_true", help="two candidates, 2 rounds: a smoke run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = Path(args.json)
    out = json.loads(path.read_text()) if path.exists() else {}
    for key, private in (("dp", True), ("fedavg", False)):
        if args.only in (None, key):
            out[key] = select_federated_settings(private, quick=args.quick)
            print(f"{key}: {out[key]['winner']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
