"""`pulsewire tasks af-ectopy-selection`: the DS1 + aftdb study behind the AF task's ectopy gate and threshold.

After the P-wave gate (``af_selection``), the AF task's false episodes were rhythms of ectopics: bigeminy and
couplets (DS1: 208, 215), premature beats followed by pauses. ``edge_runtime.rr_ectopy`` measures what is left of
a window's RR irregularity once the intervals around ectopic beats (QRS template) and short-long pairs are set
aside; the ectopy gate vetoes an AF call where the plain irregularity reaches a value and the cleaned one does not
(ectopy explains the irregularity). A first design vetoed every window whose cleaned irregularity was below
the value, regular ones included; under the same rule it qualified no gate value (aftdb segment b08's
briefly regular RR was lost), ``bench/results/af-ds1-ectopy-selection-v1.json``. This study scores every candidate (gate
value x probability threshold, the open 0.7 choice of the last session) on the same DS1 leave-records-out folds
and seeds as ``af_selection`` (its held-out probabilities), and the gates alone (with the task's P-wave gate, no
network: the network trains there) on the aftdb AF segments, whose windows are all AF. ``SELECTION_RULE`` is
fixed in code and written into the JSON, with ``written_at``, before anything is scored; ``pick`` applies it.
DS2 is not used. Writes ``bench/results/af-ds1-ectopy-selection.json`` by default.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from training.data.splits import DS1

#: Ectopy gate values (0: none) and probability thresholds tried; the rest (P gate, 30 s, 3-window vote) fixed.
ECTOPY_GATES = (0.0, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10)
THRESHOLDS = (0.5, 0.7)
MIN_AFTDB_WINDOWS, MIN_AFTDB_SEGMENTS, MIN_DS1_DURATION_SE = 0.95, 0.95, 0.95
SELECTION_RULE = (
    f"Candidates: ectopy gate in {list(ECTOPY_GATES)} (0 = none) x probability threshold in {list(THRESHOLDS)}, at "
    "the task's P-wave gate, 30 s minimum episode and 3-window vote. Keep those with aftdb AF-window retention >= "
    f"{MIN_AFTDB_WINDOWS} and aftdb segment retention (a >= 30 s episode still possible) >= {MIN_AFTDB_SEGMENTS} "
    "(P-wave gate and ectopy gate together, no network), DS1 leave-records-out episode Se >= that of the current "
    "default (no ectopy gate, threshold 0.5: Se must not be lost) and DS1 duration Se >= "
    f"{MIN_DS1_DURATION_SE}; pick the highest DS1 episode +P; ties go to the weaker change (lower ectopy gate, "
    "then lower threshold); none qualifies -> the current default. DS2 is not used.")


def pick(rows: list[dict]) -> tuple[float, float]:
    """``SELECTION_RULE`` over the candidate rows: ``(ectopy_gate, threshold)``."""
    base = next(r for r in rows if r["ectopy_gate"] == 0.0 and r["threshold"] == 0.5)

    def ok(r: dict) -> bool:
        return (r["aftdb"]["window_retention"] >= MIN_AFTDB_WINDOWS
                and r["aftdb"]["segment_retention"] >= MIN_AFTDB_SEGMENTS
                and (r["episode_se"] or 0.0) >= (base["episode_se"] or 0.0)
                and (r["duration_se"] or 0.0) >= MIN_DS1_DURATION_SE)

    fit = [r for r in rows if ok(r)] or [base]
    best = max(fit, key=lambda r: (r["episode_ppv"] or 0.0, -r["ectopy_gate"], -r["threshold"]))
    return best["ectopy_gate"], best["threshold"]


def aftdb_irregularity(task) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``segment -> (P-wave median, (clean, raw) irregularity, span)`` per window of every aftdb segment."""
    from edge_runtime.af_features import FEATURE_NAMES
    from edge_runtime.rr_ectopy import window_irregularity
    from training.tasks import aftdb
    from training.tasks.af import HOP, P_GATE_FEATURE, WINDOW
    from training.tasks.af_data import beat_atrial_activity

    folder = aftdb.locate_aftdb(mitdb_dir=task.data_dir)
    column = FEATURE_NAMES.index(P_GATE_FEATURE)
    out = {}
    for record in aftdb.LEARNING + aftdb.UNLABELLED:
        name = "aftdb-" + Path(record).name
        beats = aftdb.beat_times(folder, record)
        signal, fs = aftdb.first_lead(folder, record)
        normal = beat_atrial_activity(signal, fs, np.round(beats * fs))[1]
        wins = task.record_windows(name, HOP)
        out[name] = (wins.features[:, column].astype(np.float64), window_irregularity(beats, normal, WINDOW, HOP),
                     wins.span_s)
    return out


def run(seeds: tuple[int, ...] = (0, 1), path: Path | None = None) -> dict:
    from edge_runtime.af_episodes import AF_THRESHOLD, ECTOPY_GATE, P_GATE, ectopy_gated
    from tools.task_bench.af_gate_aftdb import retention
    from tools.task_bench.af_selection import FOLDS, held_out_probs, score_rule
    from training.tasks.af import MIN_EPISODE_S, SMOOTH, AfTask

    started = time.time()
    head = {"study": "AF ectopy gate and probability threshold chosen on DS1 leave-records-out and aftdb AF "
                     "retention (DS2 not used)", "selection_rule": SELECTION_RULE,
            "design": "2: veto where raw >= gate > clean (design 1, veto where clean < gate: "
                      "af-ds1-ectopy-selection-v1.json, picked no gate)",
            "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if path is not None:  # the rule is on disk before anything is scored
        path.write_text(json.dumps({**head, "status": "running"}, indent=1) + "\n")
    task = AfTask()
    segments = aftdb_irregularity(task)
    spans = {n: s for n, (_, _, s) in segments.items()}
    probs = held_out_probs(task, seeds)
    rows = []
    for gate in ECTOPY_GATES:
        kept = {n: ectopy_gated(p < P_GATE, irr, gate) for n, (p, irr, _) in segments.items()}
        kept_aftdb = retention(spans, kept, SMOOTH, MIN_EPISODE_S)
        for threshold in THRESHOLDS:
            rows.append({"ectopy_gate": gate, "threshold": threshold,
                         **score_rule(task, probs, P_GATE, MIN_EPISODE_S, SMOOTH, threshold, gate), "aftdb": kept_aftdb})
    gate, threshold = pick(rows)
    return {**head, "picked": {"ectopy_gate": gate, "threshold": threshold},
            "task_uses": {"ectopy_gate": ECTOPY_GATE, "threshold": AF_THRESHOLD, "p_gate": P_GATE,
                          "min_episode_s": MIN_EPISODE_S, "smooth": SMOOTH},
            "folds": [list(f) for f in FOLDS], "seeds": list(seeds), "ds1_records": list(DS1),
            "candidates": rows, "wall_seconds": round(time.time() - started, 1)}


def cmd_af_ectopy_selection(args: argparse.Namespace) -> int:
    from tools.task_bench.af_selection import write_study

    result, path = write_study(args.json, tuple(args.seeds), run, SELECTION_RULE)
    for r in result["candidates"]:
        a = r["aftdb"]
        print(f"ectopy gate {r['ectopy_gate']:.2f} threshold {r['threshold']:.1f}: DS1 Se {r['episode_se']:.3f} "
              f"+P {r['episode_ppv']:.3f} duration Se {r['duration_se']:.3f} +P {r['duration_ppv']:.3f} | aftdb "
              f"windows kept {a['window_retention']:.3f} segments kept {a['segment_retention']:.3f}")
    print(f"picked: {result['picked']} (task uses {result['task_uses']})\nresults: {path}")
    return 0
