"""`pulsewire edge ...`: run the device pipeline on a record or a stream, and score its output."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("pulsewire.edge")


def cmd_run(args: argparse.Namespace) -> int:
    from edge_runtime.classifier import BeatClassifier
    from edge_runtime.runtime import CsvSink, EdgeRuntime, WfdbAnnotationSink
    from edge_runtime.sources import TextSamples, WfdbReplay, paced, serial_lines, text_file

    classifier = BeatClassifier.from_file(Path(args.model))
    speed = None if args.speed == "max" else float(args.speed)
    if args.record:
        # small chunks keep latency low when paced; large ones cut per-chunk overhead at full speed
        source = WfdbReplay(args.record, args.lead, chunk_s=1.0 if speed is None else 0.04)
        name = Path(args.record).name
    elif args.serial:
        source, name = TextSamples(serial_lines(args.serial, args.baud), args.fs), "serial"
    elif args.input == "-":
        source, name = TextSamples(sys.stdin, args.fs), "stdin"
    else:
        source, name = text_file(args.input, args.fs), Path(args.input).stem
    out = Path(args.out)
    sinks = [CsvSink(out / f"{name}.csv"), WfdbAnnotationSink(name, out, source.fs_hz, args.extension)]
    stats = EdgeRuntime(classifier, source.fs_hz, sinks).run(paced(source, speed))
    summary = stats.to_dict()
    if isinstance(source, TextSamples):
        summary["malformed_lines"] = source.malformed
    print(json.dumps(summary, indent=1))
    print(f"beats: {out / (name + '.csv')}  annotations: {out / (name + '.' + args.extension)}")
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
    end = int(max(reference.sample.max(), test.sample.max())) + 1
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


def add_edge_parser(sub) -> None:
    edge = sub.add_parser("edge", help="the device pipeline: run it on a record or stream, score its output")
    esub = edge.add_subparsers(dest="edge_command", required=True)

    p = esub.add_parser("run", help="stream ECG through filter, R-peak detector and the int8 classifier",
                        description="Classify every beat of a WFDB record, a text file, stdin or a serial port; "
                                    "write <name>.csv and a WFDB annotation file <name>.<extension>.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--record", help="WFDB record path without extension, e.g. ../shared/data/mitdb/100")
    src.add_argument("--input", help="text file with one sample (mV) per line, or '-' for stdin")
    src.add_argument("--serial", help="serial port of an ADC front-end printing one sample per line")
    p.add_argument("--model", required=True, help="int8 .tflite with its .json metadata beside it")
    p.add_argument("--lead", default="MLII", help="lead name or channel index (WFDB records)")
    p.add_argument("--fs", type=float, default=0.0, help="sampling rate of text/serial input, Hz (resampled to "
                                                         "the model's rate)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--speed", default="max", help="replay speed: 1 (real time), 10, ... or max")
    p.add_argument("--out", default="out/edge", help="folder for the CSV and annotation files")
    p.add_argument("--extension", default="pw", help="annotation file extension")
    p.set_defaults(func=cmd_run)

    p = esub.add_parser("score", help="compare beat annotations with the reference, beat by beat (EC57 style)",
                        description="Match beats within 150 ms, excluding ventricular flutter episodes; print "
                                    "detection Se/+P and per-class Se/+P of the AAMI classes.")
    p.add_argument("--record", required=True, help="WFDB record path without extension (reference annotations)")
    p.add_argument("--reference", default="atr", help="reference annotation extension")
    p.add_argument("--annotations-dir", default="out/edge", help="folder of the annotations to score")
    p.add_argument("--extension", default="pw")
    p.add_argument("--json", help="also write the full report here")
    p.set_defaults(func=cmd_score)
