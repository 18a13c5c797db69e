"""`pulsewire edge run --task har`: IMU samples (a file, stdin or a serial port) through the int8 activity model.

Writes ``<out>/<name>-activity.csv`` (one row per classified 2.56 s window) and prints the device status: seconds
per activity, bouts, windows, dropped lines, invalid samples and any ``prolonged_inactivity`` alert. With
``--broker`` (or a bundle) it is a fleet device like the AF and anomaly runners: alerts go through the spooled
``AlertPublisher`` (QoS 1, in order, kept on disk while the broker is unreachable) and the activity fields ride
in the retained device status.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


def run_activity(args: argparse.Namespace, broker_settings: Callable[[], object] = lambda: None) -> int:
    """Run until the source ends (or Ctrl-C / SIGTERM); ``broker_settings`` is `edge run`'s device identity."""
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
    broker = broker_settings()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    publisher = None
    if broker is not None:
        from tools.device_publisher import device_publisher

        publisher = device_publisher(args, broker, out)
    runner = ActivityRunner(classifier, source.fs_hz, source.channels, args.device, args.patient,
                            ActivityPolicy(inactive_after_s=args.inactive_after),
                            emit=publisher.submit if publisher else None,
                            status_out=publisher.extra_status if publisher else None)
    speed = None if args.speed == "max" else float(args.speed)
    started = time.perf_counter()
    if publisher is not None:
        publisher.extra_status["model_version"] = classifier.metadata.model_version
        publisher.start()
    try:
        runner.run(paced(source, speed))
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        if publisher is not None:
            publisher.extra_status["malformed_lines"] = source.malformed
            publisher.close()  # drains the spool (up to its timeout), then the last retained status
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
    if publisher is not None:
        summary["alerts_sent"] = publisher.sent
    print(json.dumps(summary, indent=1))
    print(f"windows: {csv_path}")
    return 0


def add_activity_args(p: argparse.ArgumentParser) -> None:
    """The flags only ``--task har`` reads (``--imu`` sits in the source group of ``edge run``)."""
    p.add_argument("--inactive-after", type=float, default=1800.0,
                   help="--task har: seconds without walking before a prolonged_inactivity alert (default 1800)")
