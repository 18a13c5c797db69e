"""`pulsewire edge robustness`: the device chain under perturbations and on MIT-BIH's second channel."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def cmd_robustness(args: argparse.Namespace) -> int:
    from edge_runtime.classifier import BeatClassifier
    from tools.robustness import SECOND_CHANNEL, robustness_markdown, robustness_targets, run_suite
    from training.data.mitdb import DataUnavailable, locate_mitdb
    from training.data.perturbations import SUITE, perturbation
    from training.data.splits import DS2

    model = Path(args.model)
    if not model.is_file():
        print(f"pulsewire: error: {model} not found (train one with `pulsewire foundation`)", file=sys.stderr)
        return 2
    specs = args.perturbations or list(SUITE) + [SECOND_CHANNEL]
    for spec in specs:
        if spec != SECOND_CHANNEL:
            try:
                perturbation(spec)
            except ValueError as exc:
                print(f"pulsewire: error: --perturbations: {exc} (or {SECOND_CHANNEL})", file=sys.stderr)
                return 2
    try:
        data_dir = locate_mitdb(args.data_dir or os.environ.get("MITDB_DIR"), Path.home() / ".cache" / "pulsewire",
                                allow_download=False)
    except DataUnavailable as exc:
        print(f"pulsewire: error: {exc}", file=sys.stderr)
        return 2
    records = args.records or list(DS2)
    missing = [r for r in records if not (data_dir / f"{r}.hea").is_file()]
    if missing:
        print(f"pulsewire: error: records {missing} are not in {data_dir}", file=sys.stderr)
        return 2
    out = Path(args.json or "out/robustness/robustness.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"command": " ".join(["pulsewire"] + sys.argv[1:]), "model": str(model), "records": records}

    def write(rows: dict) -> None:
        results.update(rows=rows, targets=robustness_targets(rows), complete=len(rows) == len(specs))
        out.write_text(json.dumps(results, indent=1) + "\n")

    write(run_suite(data_dir, records, specs, BeatClassifier.from_file(model), on_row=write))
    md = robustness_markdown(results)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"results: {out}\nreport:  {out.with_suffix('.md')}")
    return 0


def add_robustness_parser(esub) -> None:
    p = esub.add_parser("robustness", help="R-peak detection and classes under perturbations and on MIT-BIH's "
                                           "second channel (the device chain, whole records)",
                        description="Run the edge pipeline on MIT-BIH records perturbed by each named plug-in "
                                    "(DC offset and steps, polarity, gain, resampling, baseline wander, EMG and "
                                    "electrode-motion noise, mains, saturation, lead-off) and on the second "
                                    "channel; report detection Se/+P and per-class Se/+P as JSON and Markdown.")
    p.add_argument("--model", required=True, help="int8 .tflite with its .json metadata beside it")
    p.add_argument("--records", nargs="+", help="default: the DS2 test records")
    p.add_argument("--perturbations", nargs="+",
                   help="specs such as none emg:6 resample:250 leadoff:nan, and second_channel (default: all)")
    p.add_argument("--data-dir", help="MIT-BIH folder (default $MITDB_DIR)")
    p.add_argument("--json", help="results file (default out/robustness/robustness.json; Markdown beside it)")
    p.set_defaults(func=cmd_robustness)
