"""`pulsewire classifier-cv`: compare classifier designs by leave-records-out cross-validation over DS1.

Each design (a feature set) is trained per seed on k-1 folds of DS1 patients and scored on the held-out
fold, every fold once; the pooled held-out report over all 22 DS1 patients is what a design choice rests
on (docs/classifier.md). With ``--federated`` the fold model is the in-process federated run
(``run_simulation``, the shipped strategy and label-shift default, one device per training patient, the last
round kept) and the held-out fold's macro F1 over the last rounds is reported too. DS2 is not loaded.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from tools.data_args import add_data_args, cache_root, resolve_data_dir
from tools.experiment_args import (
    BEAT_STRATEGY,
    CENTRAL_LEADS,
    FEDERATED_LEADS,
    add_federated_args,
    strategy_for,
)

log = logging.getLogger("pulsewire")
_METRICS = (("macro F1", None, "macro_f1"), ("S Se", "S", "se"), ("S +P", "S", "ppv"), ("V Se", "V", "se"),
            ("V +P", "V", "ppv"))


def cmd_classifier_cv(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edge_runtime.signal_config import SignalConfig
    from tools.seed_summary import summarise_reports
    from training.config import TrainConfig
    from training.cross_validation import RULES, cross_validate_seed
    from training.data.augment import load_augmented
    from training.data.beat_dataset import BeatDataset, load_beats
    from training.data.feature_sets import with_feature_set
    from training.data.splits import DS1

    if args.epochs < 1 or args.batch_size < 1 or args.rounds < 1 or args.last_rounds < 1:
        print("pulsewire classifier-cv: --epochs, --batch-size, --rounds and --last-rounds must be >= 1",
              file=sys.stderr)
        return 2
    args.leads = args.leads or list(FEDERATED_LEADS if args.federated else CENTRAL_LEADS)
    args.strategy = strategy_for(args, BEAT_STRATEGY)
    records = DS1[:args.max_records] if args.max_records else DS1
    if len(records) < args.folds:
        print(f"pulsewire classifier-cv: {len(records)} records cannot fill {args.folds} folds", file=sys.stderr)
        return 2
    data_dir = resolve_data_dir(args)
    signal = SignalConfig()
    leads = tuple(dict.fromkeys(("MLII", *args.leads, "other")))
    clean = load_beats(data_dir, records, signal, cache_root(), leads=leads)
    if args.augment:
        clean = BeatDataset.concat([clean, load_augmented(data_dir, records, signal, tuple(args.leads), 0,
                                                          cache_root())])
    started = time.time()
    results: dict = {"command": " ".join(["pulsewire"] + sys.argv[1:]), "data_dir": str(data_dir),
                     "folds": args.folds, "records": list(records), "trainer": _trainer_settings(args),
                     "designs": {}}
    for features in args.features:
        data = with_feature_set(clean, features, signal)
        runs = []
        for seed in args.seeds:
            cfg = TrainConfig(signal=signal, epochs=args.epochs, min_epochs=args.epochs, batch_size=args.batch_size,
                              leads=tuple(args.leads), augment=args.augment, features=features, seed=seed)
            runs.append(cross_validate_seed(data, cfg, args.folds, records, _fold_fit(args, seed)))
            log.info("%s seed %d: %.0f s", features, seed, runs[-1].seconds)
        design: dict = {"seeds": list(args.seeds), "folds": [list(map(list, r.folds)) for r in runs],
                        "seconds": [r.seconds for r in runs], "fold_curves": [r.fold_curves for r in runs],
                        "last_rounds_macro_f1": [last_rounds_mean(r.fold_curves, args.last_rounds) for r in runs],
                        "rules": {}}
        for rule in RULES:
            design["rules"][rule] = {}
            for lead in sorted(set(data.lead) & {"MLII", "other"}):
                reports = [r.report(rule, lead) for r in runs]
                design["rules"][rule][lead] = {"summary": summarise_reports(reports), "runs": reports,
                                               "fold_macro_f1": [r.fold_macro_f1(rule, lead) for r in runs]}
        results["designs"][features] = design
    results["wall_seconds"] = time.time() - started
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(cv_table(results) + f"\n\nresults: {out}")
    return 0


def _fold_fit(args: argparse.Namespace, seed: int):
    """The fold trainer: centralized (the default) or the in-process federated run keeping its last round."""
    from training.cross_validation import fit_centralized

    if not args.federated:
        return fit_centralized
    from tools.federated_commands import federated_config
    from training.federated.simulation import run_simulation

    fed = federated_config(args, seed)
    return lambda train, val, cfg: run_simulation(train, val, fed, cfg, progress=False, keep="last")


def _trainer_settings(args: argparse.Namespace) -> dict:
    if not args.federated:
        return {"kind": "centralized", "epochs": args.epochs, "batch_size": args.batch_size, "leads": args.leads}
    from dataclasses import asdict

    from tools.federated_commands import federated_config

    fed = asdict(federated_config(args, 0))
    fed.pop("seed")
    return {"kind": "federated (in process, last round kept)", "leads": args.leads, "last_rounds": args.last_rounds,
            **fed}


def last_rounds_mean(curves, last: int) -> float:
    """Mean over folds of each fold's held-out macro F1 averaged over its last ``last`` epochs or rounds."""
    return float(sum(sum(c[-last:]) / len(c[-last:]) for c in curves) / len(curves))


def _cell(summary: dict, cls: str | None, metric: str) -> str:
    stat = summary[metric] if cls is None else summary["per_class"][cls][metric]
    if stat["mean"] is None:
        return "–"
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def cv_table(results: dict) -> str:
    """Markdown: one row per design, decision rule and lead, mean ± std over seeds of the pooled report."""
    head = "| features | rule | lead | " + " | ".join(m[0] for m in _METRICS) + " | S called V |"
    rows = [head, "|" + "---|" * (len(_METRICS) + 4)]
    for features, design in results["designs"].items():
        for rule, by_lead in design["rules"].items():
            for lead, part in by_lead.items():
                s = part["summary"]
                cells = [_cell(s, cls, metric) for _, cls, metric in _METRICS] + [_cell(s, None, "s_called_v")]
                rows.append(f"| {features} | {rule} | {lead} | " + " | ".join(cells) + " |")
    last = results.get("trainer", {}).get("last_rounds")
    for features, design in results["designs"].items():
        if last and "last_rounds_macro_f1" in design:
            per_seed = " / ".join(f"{100 * v:.1f}" for v in design["last_rounds_macro_f1"])
            rows.append(f"\n{features}: held-out macro F1 over the last {last} rounds, mean over folds, per seed "
                        f"{per_seed}")
    return "\n".join(rows)


def add_classifier_cv_parser(sub) -> None:
    from edge_runtime.template_features import FEATURE_SETS
    from training.federated.registry import STRATEGIES

    p = sub.add_parser("classifier-cv", help="compare classifier designs by leave-records-out CV over DS1",
                       description="Cross-validate beat classifier designs over DS1 patients only: DS1 is split "
                                   "into folds of whole records, each fold is scored by a model trained on the "
                                   "others for a fixed number of epochs, and the pooled held-out report (every "
                                   "DS1 patient once) is given per seed, design and decision rule. DS2 is "
                                   "never loaded.")
    add_data_args(p)
    p.add_argument("--features", nargs="+", choices=sorted(FEATURE_SETS), default=sorted(FEATURE_SETS),
                   help="feature sets to compare (default: all)")
    p.add_argument("--folds", type=int, default=5, help="folds of DS1 records (default 5)")
    p.add_argument("--epochs", type=int, default=20, help="epochs per fold model, fixed (default 20)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--leads", nargs="+", choices=("MLII", "other"),
                   help="leads that train (default: both centralized, MLII federated; held-out patients are "
                        "scored on MLII and the second channel apart)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                   help="train also on one perturbed copy of every training lead")
    p.add_argument("--max-records", type=int, help="the first N DS1 records only (a quick, small run)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--json", default="out/classifier-cv/cv.json", help="results JSON path")
    p.add_argument("--federated", action="store_true",
                   help=f"fold models are federated runs in process (default strategy {BEAT_STRATEGY}, the beat "
                        "label-shift default, one device per training patient; the last round is scored)")
    p.add_argument("--last-rounds", type=int, default=5,
                   help="report each fold's held-out macro F1 averaged over its last N rounds or epochs (default 5)")
    add_federated_args(p, sorted(STRATEGIES))
    p.set_defaults(func=cmd_classifier_cv)
