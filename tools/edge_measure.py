"""Measuring the device pipeline: `pulsewire edge bench` (R-peak detection against peers, end-to-end speed,
alert latency, personalization) and `pulsewire edge score` (annotations against the reference, EC57 style)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def cmd_bench(args: argparse.Namespace) -> int:
    from tools.edge_bench import (detection_bench, edge_markdown, edge_targets, end_to_end_bench, latency_bench,
                                  personalization_bench)
    from training.data.mitdb import locate_mitdb

    import os

    data_dir = locate_mitdb(args.data_dir or os.environ.get("MITDB_DIR"), Path.home() / ".cache" / "pulsewire",
                            allow_download=False)
    records = args.records or (data_dir / "RECORDS").read_text().split()
    results = {"command": " ".join(["pulsewire"] + sys.argv[1:]), "data_dir": str(data_dir),
               "detection": detection_bench(data_dir, records)}
    if args.model:
        results["end_to_end"] = end_to_end_bench(data_dir, args.e2e_records, Path(args.model))
        results["latency"] = latency_bench(data_dir, Path(args.model), args.latency_seconds)
        from training.data.splits import DS2

        results["personalization"] = personalization_bench(data_dir, Path(args.model), list(DS2))
    results["targets"] = edge_targets(results)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    md = edge_markdown(results)
    out.with_suffix(".md").write_text(md)
    print(md.split("## R-peak")[0])
    print(f"results: {out}\nreport:  {out.with_suffix('.md')}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import wfdb

    from edge_runtime.aami import AAMI_CLASSES, aami_labels
    from edge_runtime.scoring import flutter_episodes, score_classes

    test_path = Path(args.annotations_dir) / Path(args.record).name
    for path in (Path(f"{args.record}.{args.reference}"), Path(f"{test_path}.{args.extension}")):
        if not path.is_file():
            print(f"pulsewire: error: {path} not found (run `pulsewire edge run` first, or check --record, "
                  "--annotations-dir and --extension)", file=sys.stderr)
            return 2
    reference = wfdb.rdann(args.record, args.reference)
    test = wfdb.rdann(str(test_path), args.extension)
    ref_labels, ref_pos = aami_labels(reference.symbol)
    test_labels, test_pos = aami_labels(test.symbol)
    end = int(max(np.max(reference.sample, initial=0), np.max(test.sample, initial=0))) + 1
    episodes = flutter_episodes(reference.sample, reference.symbol, reference.aux_note, end)
    report = score_classes(reference.sample[ref_pos], ref_labels, test.sample[test_pos], test_labels, AAMI_CLASSES,
                           float(reference.fs or 360.0), macro_over=("N", "S", "V", "F"), excluded=episodes)
    det = report["detection"]
    print(f"detection: Se {100 * det['se']:.2f} %  +P {100 * det['ppv']:.2f} %  "
          f"(TP {det['true_positives']}, FN {det['false_negatives']}, FP {det['false_positives']}; "
          f"{len(episodes)} flutter episode(s) excluded)")
    for c in AAMI_CLASSES:
        pc = report["per_class"][c]
        se = "–" if pc["se"] is None else f"{100 * pc['se']:.1f}"
        ppv = "–" if pc["ppv"] is None else f"{100 * pc['ppv']:.1f}"
        print(f"{c}: Se {se} / +P {ppv}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


def add_bench_parser(esub) -> None:
    p = esub.add_parser("bench", help="R-peak detection vs peers on every record, end-to-end speed, alert latency")
    p.add_argument("--data-dir", help="MIT-BIH folder (default $MITDB_DIR)")
    p.add_argument("--records", nargs="+", help="default: all records listed in RECORDS")
    p.add_argument("--model", help="int8 model for the end-to-end and latency parts (skipped without)")
    p.add_argument("--e2e-records", nargs="+", default=["100", "108", "203", "208", "232"])
    p.add_argument("--latency-seconds", type=float, default=120.0)
    p.add_argument("--json", default="out/bench/edge.json",
                   help="results path (default: out/bench/edge.json; the committed bench/results/edge.json is "
                        "written only when asked for, as `make bench` does)")
    p.set_defaults(func=cmd_bench)


def add_score_parser(esub) -> None:
    p = esub.add_parser("score", help="compare beat annotations with the reference, beat by beat (EC57 style)",
                        description="Match beats within 150 ms, excluding ventricular flutter episodes; print "
                                    "detection Se/+P and per-class Se/+P of the AAMI classes.")
    p.add_argument("--record", required=True, help="WFDB record path without extension (reference annotations)")
    p.add_argument("--reference", default="atr", help="reference annotation extension")
    p.add_argument("--annotations-dir", default="out/edge", help="folder of the annotations to score")
    p.add_argument("--extension", default="pw")
    p.add_argument("--json", help="also write the full report here")
    p.set_defaults(func=cmd_score)
