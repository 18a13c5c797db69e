"""`pulsewire edge run --task af`: an AF-monitoring device (R-peaks -> AfMonitor -> alerts, AF burden).

No beat classifier: the int8 AF model (``--model``, exported by `pulsewire export --task af`) reads the RR rhythm
of the device's own R-peaks. With ``--broker`` (or a bundle) its af_onset / af_offset alerts go through the
spooled alert publisher and the AF fields ride in the retained device status; without, they are written to
``OUT/<name>-af-alerts.jsonl``. Prints a JSON summary: episodes, AF seconds and burden per hour of signal.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


def run_af_device(args: argparse.Namespace, open_source: Callable[[], tuple], broker_settings: Callable[[], object]) -> int:
    """Run until the source ends (or Ctrl-C / SIGTERM); ``open_source`` and ``broker_settings`` are `edge run`'s."""
    from edge_runtime.af_device import rpeak_beats
    from edge_runtime.af_monitor import AfMonitor
    from edge_runtime.alerts import AlertBuilder
    from edge_runtime.sources import paced
    from edge_runtime.task_model import TaskInterpreter

    if not args.model:
        raise ValueError("--task af needs --model af_int8.tflite (from `pulsewire export --task af`), with its .json")
    if not Path(args.model).is_file():
        raise ValueError(f"--model {args.model}: no such file")
    model = TaskInterpreter.from_file(Path(args.model))
    if model.contract.task != "af":
        raise ValueError(f"--model {args.model} is a {model.contract.task!r} model; --task af needs an 'af' export")
    source, name = open_source()
    broker = broker_settings()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    version = model.metadata.model_version
    publisher, written = None, []
    if broker is not None:
        from tools.device_publisher import device_publisher

        publisher = device_publisher(args, broker, out)
        publisher.start()
        builder, emit, status = publisher.builder, publisher.submit, publisher.extra_status
    else:
        builder, emit, status = AlertBuilder(args.device, args.patient), written.append, {}
    monitor = AfMonitor(model.predict, model.contract, builder, emit, version, status=status)
    speed = None if args.speed == "max" else float(args.speed)
    beats = 0
    try:
        for beat in rpeak_beats(paced(source, speed), source.fs_hz, version):
            beats += 1
            monitor.on_beat(beat)
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        monitor.close()
        if publisher is not None:
            publisher.close()
    if publisher is None:
        (out / f"{name}-af-alerts.jsonl").write_text("".join(json.dumps(a, sort_keys=True) + "\n" for a in written))
    hours = sorted(monitor.analysed_s_by_hour)
    summary = {"beats": beats, "model_version": version, "episodes": [[round(a, 1), round(b, 1)] for a, b in
                                                                      monitor.episodes],
               "af_seconds": status["af_seconds"], "window_restarts": monitor.restarts,
               "burden_by_hour": {h: round(monitor.burden(h), 4) for h in hours},
               "alerts": len(written) if publisher is None else publisher.sent}
    print(json.dumps(summary, indent=1))
    if publisher is None:
        print(f"alerts: {out / (name + '-af-alerts.jsonl')}")
    return 0
