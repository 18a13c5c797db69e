"""`pulsewire edge run --task har`: IMU samples (a file, stdin or a serial port) through the int8 activity model.

Writes ``<out>/<name>-activity.csv`` (one row per classified 2.56 s window) and prints the device status: seconds
per activity, bouts, windows, dropped lines, invalid samples and any ``prolonged_inactivity`` alert.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path


def run_activity(args: argparse.Namespace) -> int:
    from edge_runtime.activity import ActivityPolicy, ActivityRunner, WindowClassifier
    from edge_runtime.imu_source import ImuTextSamples, imu_text_file
    from edge_runtime.sources import paced, serial_lines

    if args.record or args.input:
        raise ValueError("--task har reads IMU lines: give --imu FILE (or '-' for stdin) or --serial PORT, "
                         "with --fs (the model's rate, 50 Hz for HAPT-trained models)")
    if not args.model:
        raise ValueError("--task har needs --model FILE: an activity model from `pulsewire export --task har`")
    classifier = WindowClassifier.from_file(Path(args.model))
    if args.serial:
        source, name = ImuTextSamples(serial_lines(args.serial, args.baud), args.fs), "serial"
    elif args.imu == "-":
        source, name = ImuTextSamples(sys.stdin, args.fs), "stdin"
    else:
        source, name = imu_text_file(args.imu, args.fs), Path(args.imu).stem
    runner = ActivityRunner(classifier, source.fs_hz, source.channels, args.device, args.patient,
                            ActivityPolicy(inactive_after_s=args.inactive_after))
    speed = None if args.speed == "max" else float(args.speed)
    started = time.perf_counter()
    try:
        runner.run(paced(source, speed))
    except KeyboardInterrupt:
        pass
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"{name}-activity.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["window", "end_sample", "time_s", "activity", "confidence"])
        for w in runner.results:
            writer.writerow([w.index, w.end_sample, f"{w.time_s:.2f}", w.activity, f"{w.confidence:.3f}"])
    summary = {"status": runner.status.to_dict(), "alerts": runner.alerts, "malformed_lines": source.malformed,
               "invalid_samples": source.invalid, "model_version": classifier.metadata.model_version,
               "inference_seconds": round(runner.inference_s, 3),
               "wall_seconds": round(time.perf_counter() - started, 3)}
    print(json.dumps(summary, indent=1))
    print(f"windows: {csv_path}")
    return 0


def add_activity_args(p: argparse.ArgumentParser) -> None:
    """The flags only ``--task har`` reads (``--imu`` sits in the source group of ``edge run``)."""
    p.add_argument("--inactive-after", type=float, default=1800.0,
                   help="--task har: seconds without walking before a prolonged_inactivity alert (default 1800)")
