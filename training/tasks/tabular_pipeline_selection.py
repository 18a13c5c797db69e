"""The tabular task's feature transform and round policy, chosen by cross-validation over the non-test patients.

Why: the settings the bench ships were each chosen on one lever at a time (model, then DP-SGD step, then FedAvg
step), all under "train on the hospitals' training patients, keep the round with the best validation
log-likelihood". Two levers were never measured: the features enter raw (sizes, areas and counts, right-skewed,
so a few large tumours dominate the standardised scale), and the 69 validation patients do nothing but choose a
round, a choice 69 patients make noisily (most of all under DP-SGD's noise), while they could be training data
with a round count fixed beforehand.

Protocol (session 8), written into ``bench/results/tasks-tabular-selection.json`` under "pipeline" and committed
before the cross-validation ran; the test split is never read:
- Folds: ``tabular_selection.cv_folds`` over the 456 non-test patients, 5 folds x 1 repeat (the federated
  settings' folds; committed first as 5 x 3, cut to one repeat before the full run because the shared machine
  was at load 21 on 2 cores; a 2-fold smoke run, folds 0 and 1 of these, had been seen: ``SMOKE_SEEN``). In a fold, the fitting patients are split as the task splits them: each hospital's
  training patients and its held-out validation patients.
- Every candidate is the real federated run (``run_task_federated``, "hospitals" partition, FedAvg) at the
  shipped settings: FedAvg 3 local epochs, batches of 16, SGD 0.5, 25 rounds; DP-SGD q 0.1, 10 rounds of one
  local epoch, SGD 1.0, C 0.1, σ for ε = 1 at δ = 1e-6 (dp-accounting PLD). Same seeds for every candidate.
- Candidates: transform "standard" (raw features) or "log1p" (log(1 + x), then standardised), crossed with
  three round policies: "val-round" (shipped: train on the training patients, keep the round with the best
  validation log-likelihood), "last-round" (the same run, its last round), "all-last" (train on the training
  and validation patients, keep the last round).
- Score: accuracy of the held-out fold (never the patients that trained or chose a round).
- Rule 1 (transform, one for the task, so one edge contract): the mean over FedAvg and DP-SGD of the "val-round"
  CV accuracy; "log1p" replaces "standard" only if higher by more than 0.5 pp (the tie tolerance of the earlier
  selections), else "standard" stays.
- Rule 2 (round policy, per mode, under rule 1's transform): a policy other than the shipped "val-round" is
  taken only if its mean CV accuracy is higher by more than 0.5 pp; of several such, the highest mean.
- Model (softmax vs MLP-8) and its rule are not reopened: MLP-8's 0.43 pp CV lead is smaller than the fold
  std (0.95-1.41 pp) and inside the tolerance fixed before that CV ran; changing the rule after seeing which
  model it picks (and MLP-8's earlier test numbers, docs/tasks.md) would be selection on the test split.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from training.tasks.tabular_selection import FOLDS, TIE_TOLERANCE, cv_folds, run_jobs

log = logging.getLogger(__name__)

TRANSFORMS = ("standard", "log1p")
POLICIES = ("val-round", "last-round", "all-last")
SHIPPED = ("standard", "val-round")
MODES = ("fedavg", "dp")
REPEATS = 1
#: Held-out accuracy (val-round, last-round, all-last) of the smoke run (``--quick``: folds 0 and 1), seen before
#: the repeats were cut from 3 to 1: disclosed because those two folds are part of the full run.
SMOKE_SEEN = {"standard fedavg": [[0.978, 0.967, 0.978], [1.0, 0.989, 0.989]],
              "standard dp": [[0.935, 0.913, 0.946], [0.956, 0.956, 0.989]],
              "log1p fedavg": [[0.978, 0.978, 0.978], [0.989, 1.0, 0.989]],
              "log1p dp": [[0.946, 0.935, 0.946], [0.945, 0.945, 0.978]]}


@dataclass(frozen=True)
class Side:
    """The non-test patients under one transform: features, labels, persons, and which are validation patients."""

    x: np.ndarray
    y: np.ndarray
    persons: np.ndarray
    is_val: np.ndarray


def non_test_side(transform: str) -> Side:
    from training.tasks.tabular import FEATURES_INPUT, TabularTask

    task = TabularTask(transform=transform)
    train, val = task.load("train"), task.load("val")
    return Side(np.concatenate([train.inputs[FEATURES_INPUT], val.inputs[FEATURES_INPUT]]),
                np.concatenate([train.targets, val.targets]), np.concatenate([train.persons, val.persons]),
                np.r_[np.zeros(len(train), bool), np.ones(len(val), bool)])


def mode_settings(mode: str):
    """(rounds, LocalConfig) of the shipped bench settings for ``mode`` ("fedavg" or "dp"): the winners of
    ``tabular_federated_selection`` that ``tools/task_bench/tabular.py`` runs."""
    from training.tasks.tabular_federated_selection import DpCandidate, FedCandidate

    candidate = FedCandidate(3, 16, 0.5, 25) if mode == "fedavg" else DpCandidate(0.1, 10, 1.0, 0.1)
    return candidate.rounds, candidate.local(candidate.noise())


def _split(side: Side, rows: np.ndarray):
    from training.tasks.base import TaskSplit
    from training.tasks.tabular import FEATURES_INPUT

    return TaskSplit({FEATURES_INPUT: side.x[rows]}, side.y[rows], side.persons[rows])


def fold_scores(side: Side, fit: np.ndarray, held: np.ndarray, mode: str, seed: int) -> dict[str, float]:
    """Held-out accuracy of the three round policies on one fold (two federated runs)."""
    from training.federated.simulation import FederatedConfig
    from training.tasks.federated import run_task_federated
    from training.tasks.tabular import TabularTask

    task = TabularTask()
    rounds, local = mode_settings(mode)
    fed = FederatedConfig(rounds=rounds, partition="hospitals", seed=seed, local=local)
    train, val = fit[~side.is_val[fit]], fit[side.is_val[fit]]
    run = run_task_federated(task, _split(side, train), _split(side, val), fed, test=_split(side, held))
    chosen = next(r for r in run.history if r["round"] == run.best_epoch)
    every = run_task_federated(task, _split(side, fit), _split(side, val), fed, test=_split(side, held),
                               last_round=True)
    return {"val-round": chosen["test_accuracy"], "last-round": run.history[-1]["test_accuracy"],
            "all-last": every.history[-1]["test_accuracy"]}


def _fold_job(job: tuple) -> tuple:
    transform, mode, k, fit, held = job
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    scores = fold_scores(non_test_side(transform), fit, held, mode, seed=k)
    log.info("%s %s fold %d: %s", transform, mode, k, scores)
    return transform, mode, k, scores


def cross_validate(repeats: int = REPEATS, workers: int = 1, folds_limit: int | None = None) -> list[dict]:
    """One row per (transform, mode, policy): fold accuracies, mean, std. ``workers`` processes (spawned)."""
    folds = cv_folds(non_test_side("standard").y, repeats=repeats)[:folds_limit]
    jobs = [(t, m, k, fit, held) for t in TRANSFORMS for m in MODES for k, (fit, held) in enumerate(folds)]
    done = run_jobs(_fold_job, jobs, workers)
    rows = []
    for t in TRANSFORMS:
        for m in MODES:
            per_fold = [s for tt, mm, _, s in sorted(done, key=lambda d: d[2]) if (tt, mm) == (t, m)]
            for p in POLICIES:
                scores = [float(s[p]) for s in per_fold]
                rows.append({"transform": t, "mode": m, "policy": p, "folds": scores,
                             "mean": float(np.mean(scores)), "std": float(np.std(scores))})
    return rows


def choose(rows: list[dict], tolerance: float = TIE_TOLERANCE) -> dict:
    """Rules 1 and 2 of the protocol: the transform, then each mode's round policy."""
    mean = {(r["transform"], r["mode"], r["policy"]): r["mean"] for r in rows}
    shipped_t, shipped_p = SHIPPED
    by_transform = {t: float(np.mean([mean[(t, m, shipped_p)] for m in MODES])) for t in TRANSFORMS}
    better = [t for t in TRANSFORMS if by_transform[t] > by_transform[shipped_t] + tolerance]
    transform = max(better, key=by_transform.get) if better else shipped_t
    policies = {}
    for m in MODES:
        base = mean[(transform, m, shipped_p)]
        better = [p for p in POLICIES if mean[(transform, m, p)] > base + tolerance]
        policies[m] = max(better, key=lambda p: mean[(transform, m, p)]) if better else shipped_p
    return {"transform": transform, "transform_scores": by_transform, "policy": policies}


PROTOCOL = {
    "candidates": {"transform": list(TRANSFORMS), "policy": list(POLICIES), "mode": list(MODES)},
    "shipped": {"transform": SHIPPED[0], "policy": SHIPPED[1]},
    "folds": FOLDS, "repeats": REPEATS, "tie_tolerance": TIE_TOLERANCE,
    "repeats_note": "committed as 5 x 3 (commit dcf17ed), cut to 5 x 1 before the full run (shared machine at load "
                    "21 on 2 cores); a 2-fold smoke run (folds 0 and 1 of these) had been seen: smoke_seen",
    "smoke_seen": SMOKE_SEEN,
    "score": "held-out fold accuracy (fold patients neither train nor choose a round)",
    "rule_1": "transform: mean over FedAvg and DP-SGD of the val-round CV accuracy; log1p replaces standard only if "
              "higher by more than the tie tolerance",
    "rule_2": "round policy per mode under rule 1's transform: another policy than val-round only if its mean CV "
              "accuracy is higher by more than the tie tolerance; of several, the highest mean",
    "model_rule": "unchanged (softmax by 'fewest parameters within 0.5 pp'): MLP-8's 0.43 pp lead is below the fold "
                  "std and inside the tolerance fixed before that CV; changing the rule now would be choosing by "
                  "the test split",
}


def main(argv: list[str] | None = None) -> int:
    """``python -m training.tasks.tabular_pipeline_selection [--protocol-only] [--workers 2]``: writes "pipeline"
    into the selection JSON (the protocol first, then the CV rows and the choice)."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="bench/results/tasks-tabular-selection.json")
    parser.add_argument("--protocol-only", action="store_true", help="record the protocol, run nothing")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="two folds, one repeat: a smoke run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = Path(args.json)
    out = json.loads(path.read_text()) if path.exists() else {}
    out["pipeline"] = {"protocol": PROTOCOL}
    if not args.protocol_only:
        rows = cross_validate(1 if args.quick else REPEATS, args.workers, 2 if args.quick else None)
        out["pipeline"].update(candidates=rows, choice=choose(rows), quick=args.quick)
        print(json.dumps(out["pipeline"]["choice"]))
    path.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
