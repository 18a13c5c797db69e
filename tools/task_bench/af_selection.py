"""`pulsewire tasks af-selection`: the DS1-only study that chose the AF task's P-wave gate and episode rules.

DS2 must not choose anything, and DS1's validation fold (201 + four records) scores almost every model at episode
Se 1.0, so the post-processing of the AF decisions was chosen by leave-records-out over DS1: three folds (201
with seven records without AF, 203 with seven others, 201 with the remaining six), the rest of DS1 and the aftdb
segments training the task's own network (fixed epochs, no epoch selection: nothing held out is looked at
before scoring), two seeds. Each held-out record is scored with the EC57 AF measures, pooled, for every P-wave
gate in ``GATES`` and, at the task's gate, for the episode rules in ``RULES`` (minimum episode seconds, vote
windows, probability threshold).

DS1 has two AF persons and one flutter stretch, so it cannot show what a gate removes from other people's AF (on
DS2, looked at only after the first choice, record 222's flutter waves passed the gate as P waves). The second,
non-DS2 source is the AF Termination Challenge database (``af_gate_aftdb``): every window there is AF, so the share
of its windows a gate removes is the gate's miss rate on people DS1 does not hold. ``SELECTION_RULE`` is fixed in
code and written into the JSON before either source is scored; ``pick`` applies it. Writes one JSON (default
``bench/results/af-ds1-selection.json``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from training.data.splits import DS1

FOLDS = (("201", "101", "106", "108", "109", "112", "114", "115"),
         ("203", "116", "118", "119", "122", "124", "205", "207"),
         ("201", "208", "209", "215", "220", "223", "230"))
GATES = (np.inf, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4)
RULES = ((30.0, 3, 0.5), (45.0, 3, 0.5), (60.0, 3, 0.5), (30.0, 5, 0.5), (30.0, 1, 0.5), (30.0, 3, 0.7))
EPOCHS, BATCH, LEARNING_RATE = 8, 64, 1e-3
#: Fixed before the aftdb retention was first computed (git history: committed before the run).
MIN_AFTDB_WINDOWS, MIN_AFTDB_SEGMENTS, MIN_DS1_SE, MIN_DS1_DURATION_SE = 0.95, 0.95, 0.95, 0.95
SELECTION_RULE = (
    f"Among the gates (no gate included), keep those with aftdb AF-window retention >= {MIN_AFTDB_WINDOWS}, aftdb "
    f"segment retention (a >= 30 s episode still possible after the gate and the vote) >= {MIN_AFTDB_SEGMENTS}, "
    f"DS1 leave-records-out episode Se >= {MIN_DS1_SE} and duration Se >= {MIN_DS1_DURATION_SE}; pick the highest "
    "DS1 episode +P; ties go to the weaker gate (higher value, no gate highest); if none qualifies, no gate. "
    "DS2 is not used.")


def held_out_probs(task, seeds: tuple[int, ...]) -> list[tuple[int, str, np.ndarray]]:
    """``(seed, record, AF probability per hop-8 window)`` of every held-out record of every fold."""
    import keras

    from edge_runtime.af_features import standardise
    from training.tasks.af import HOP, TRAIN_HOP
    from training.tasks.base import TaskSplit

    external = [p for p in task.persons("train", 0) if p not in DS1]
    out = []
    for fold in FOLDS:
        train_names = [r for r in DS1 if r not in fold] + external
        train = [task.record_windows(n, TRAIN_HOP) for n in train_names]
        scale = np.concatenate([task.record_windows(n, HOP).features for n in train_names])
        mean, std = scale.mean(axis=0), np.where(scale.std(axis=0) > 1e-6, scale.std(axis=0), 1.0)
        x = standardise(np.concatenate([w.features for w in train]), mean, std)
        y = np.concatenate([w.targets for w in train])
        split = TaskSplit({"rr_features": x}, y, np.zeros(len(y), str))
        weights = np.asarray(task.sample_weights(split), np.float32)[y]
        for seed in seeds:
            model = task.build_model(split, seed)
            model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="sparse_categorical_crossentropy")
            model.fit(x, y, sample_weight=weights, batch_size=BATCH, epochs=EPOCHS, shuffle=True, verbose=0)
            for name in fold:
                feats = standardise(task.record_windows(name, HOP).features, mean, std)
                out.append((seed, name, model.predict(feats, batch_size=4096, verbose=0)[:, 1]))
    return out


def score_rule(task, probs, gate: float, min_s: float, smooth: int, threshold: float, ectopy_gate: float = 0.0) -> dict:
    """Pooled EC57 measures of the held-out records under one post-processing (``ectopy_gate`` 0: none)."""
    from edge_runtime.af_episodes import ectopy_gated, p_gated, smooth_decisions
    from edge_runtime.af_features import FEATURE_NAMES
    from training.tasks.af import P_GATE_FEATURE
    from training.tasks.af_metrics import af_report, merge_spans

    rows = []
    for seed, name, p in probs:
        rhythm, wins = task.record(name)
        p_median = wins.features[:, FEATURE_NAMES.index(P_GATE_FEATURE)]
        gated = ectopy_gated(p_gated(p, p_median, threshold, gate), task.irregularity(name), ectopy_gate)
        flags = smooth_decisions(gated, smooth)
        detected = [e for e in merge_spans(wins.span_s, flags) if e[1] - e[0] >= min_s]
        rows.append((f"{seed}:{name}", list(rhythm.episodes), detected))
    report = af_report(rows)
    false = {k: v["det_episodes"] - v["det_true"] for k, v in report["per_record"].items()
             if v["det_episodes"] > v["det_true"]}
    return {**{k: report["gross"][k] for k in ("episode_se", "episode_ppv", "duration_se", "duration_ppv")},
            "counts": report["counts"], "false_episodes_by_seed_record": false}


def pick(gates: list[dict]) -> float | None:
    """``SELECTION_RULE`` over the gate rows (``p_gate`` None = no gate): the gate value it picks, None = no gate."""
    def ok(g: dict) -> bool:
        return (g["aftdb"]["window_retention"] >= MIN_AFTDB_WINDOWS
                and g["aftdb"]["segment_retention"] >= MIN_AFTDB_SEGMENTS
                and (g["episode_se"] or 0.0) >= MIN_DS1_SE and (g["duration_se"] or 0.0) >= MIN_DS1_DURATION_SE)

    def key(g: dict) -> tuple[float, float]:
        return (g["episode_ppv"] or 0.0, np.inf if g["p_gate"] is None else g["p_gate"])

    fit = [g for g in gates if ok(g)]
    return max(fit, key=key)["p_gate"] if fit else None


def run(seeds: tuple[int, ...] = (0, 1), path: Path | None = None) -> dict:
    from edge_runtime.af_episodes import P_GATE
    from tools.task_bench.af_gate_aftdb import aftdb_retention
    from training.tasks.af import MIN_EPISODE_S, SMOOTH, AfTask

    started = time.time()
    head = {"study": "AF P-wave gate and episode rules chosen on DS1 leave-records-out and aftdb AF-window "
                     "retention (DS2 not used)", "selection_rule": SELECTION_RULE}
    if path is not None:  # the rule is on disk before anything is scored
        path.write_text(json.dumps({**head, "status": "running"}, indent=1) + "\n")
    task = AfTask()
    retention = aftdb_retention(task, GATES, SMOOTH, MIN_EPISODE_S)
    probs = held_out_probs(task, seeds)
    gates = [{"p_gate": None if not np.isfinite(g) else g, **score_rule(task, probs, g, MIN_EPISODE_S, SMOOTH, 0.5),
              "aftdb": r} for g, r in zip(GATES, retention)]
    rules = [{"min_episode_s": m, "smooth": s, "threshold": t, **score_rule(task, probs, P_GATE, m, s, t)}
             for m, s, t in RULES]
    return {**head, "picked_p_gate": pick(gates), "folds": [list(f) for f in FOLDS], "seeds": list(seeds),
            "training": {"epochs": EPOCHS, "batch": BATCH, "learning_rate": LEARNING_RATE, "external": "aftdb"},
            "task_uses": {"p_gate": None if not np.isfinite(P_GATE) else P_GATE, "min_episode_s": MIN_EPISODE_S,
                          "smooth": SMOOTH, "threshold": 0.5},
            "gates": gates, "rules_at_task_gate": rules, "wall_seconds": round(time.time() - started, 1)}


def write_study(json_path: str, seeds: tuple[int, ...], run_study: Callable[[tuple[int, ...], Path], dict],
                rule: str) -> tuple[dict, Path]:
    """Run a selection study (its rule is written into ``json_path`` before scoring), save and print the rule."""
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = run_study(seeds, path)
    path.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(rule)
    return result, path


def cmd_af_selection(args: argparse.Namespace) -> int:
    result, path = write_study(args.json, tuple(args.seeds), run, SELECTION_RULE)
    for g in result["gates"]:
        a = g["aftdb"]
        print(f"gate {g['p_gate']!s:5s} DS1 Se {g['episode_se']:.3f} +P {g['episode_ppv']:.3f} "
              f"duration Se {g['duration_se']:.3f} +P {g['duration_ppv']:.3f} | aftdb windows kept "
              f"{a['window_retention']:.3f} segments kept {a['segment_retention']:.3f}")
    print(f"picked p_gate: {result['picked_p_gate']} (task uses {result['task_uses']['p_gate']})\nresults: {path}")
    return 0
