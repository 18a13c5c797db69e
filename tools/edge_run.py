"""`pulsewire edge run` and `edge selftest`: the device pipeline on a record, a file, stdin or a serial port,
with the classifier from a model file or a signed model folder, and optionally alerts, releases, strips and
federated rounds over the broker."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from tools.activity_run import add_activity_args
from tools.broker_args import add_broker_args
from tools.device_publisher import device_publisher

log = logging.getLogger("pulsewire.edge")


def _classifier(args: argparse.Namespace):
    from edge_runtime.classifier import BeatClassifier

    if args.model:
        return BeatClassifier.from_file(Path(args.model)), None
    if not (args.models and (args.pubkey or getattr(args, "bundle", None))):
        raise ValueError("give --model FILE, or --models DIR and --pubkey PEM (install a first model with "
                         "`pulsewire edge install`)")
    from broker.model_release import load_public_key
    from edge_runtime.model_store import ModelStore

    if args.pubkey:
        public = load_public_key(Path(args.pubkey))
    else:  # the fleet's signing key from the device bundle
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        public = load_pem_public_key(_bundle(args).signing_pub_pem.encode())
    store = ModelStore(Path(args.models), public, args.fleet)
    return store.load_current(), store


def _bundle(args: argparse.Namespace):
    from broker.fleet_config import DeviceBundle

    return DeviceBundle.load(Path(args.bundle))


def _device_identity(args: argparse.Namespace):
    """(broker settings or None, bundle or None); a bundle sets fleet, device and device id."""
    from tools.broker_args import broker_settings

    if not args.bundle:
        if args.join:
            raise ValueError("--join needs the device's bundle: --bundle DEVICE.pwdevice (`pulsewire device enroll`)")
        return broker_settings(args), None
    bundle = _bundle(args)
    args.fleet, args.device, args.device_id = bundle.fleet, bundle.device, bundle.device_id
    settings = bundle.materialize(Path(args.state or Path(args.bundle).with_suffix(".state")) / "tls", args.broker)
    return settings, bundle


def _model_bytes(args: argparse.Namespace, store) -> bytes:
    if store is None:
        return Path(args.model).read_bytes()
    return (store.root / f"v{store.current_version()}" / "model.tflite").read_bytes()


def _stop_on_sigterm() -> None:
    """A service manager stops a device with SIGTERM: unwind like Ctrl-C so links close and files flush."""
    import signal

    def _raise(_sig, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


def cmd_run(args: argparse.Namespace) -> int:
    """`edge run --task NAME`: the task's device pipeline from ``EDGE_RUNNERS`` (beat by default)."""
    runner = EDGE_RUNNERS.get(args.task)
    if runner is None:
        raise ValueError(f"task {args.task!r} has no edge runner (`edge run` knows: {', '.join(sorted(EDGE_RUNNERS))}); "
                         "run its exported model with edge_runtime.task_model.TaskInterpreter, or pick one of those")
    return runner(args)


def ecg_source(args: argparse.Namespace, speed: float | None):
    """(source, name) of ``--record``/``--serial``/``--input``: the samples every ECG task's device reads."""
    from edge_runtime.sources import TextSamples, WfdbReplay, serial_lines, text_file

    if args.record:
        # small chunks keep latency low when paced; large ones cut per-chunk overhead at full speed
        return WfdbReplay(args.record, args.lead, chunk_s=1.0 if speed is None else 0.04), Path(args.record).name
    if args.serial:
        return TextSamples(serial_lines(args.serial, args.baud), args.fs), "serial"
    if args.input == "-":
        return TextSamples(sys.stdin, args.fs), "stdin"
    return text_file(args.input, args.fs), Path(args.input).stem


def run_beats(args: argparse.Namespace) -> int:
    """The beat task on the device: filter, R-peak detector, the int8 beat classifier, alerts, fleet rounds."""
    from edge_runtime.runtime import CsvSink, EdgeRuntime, WfdbAnnotationSink
    from edge_runtime.sources import TextSamples, paced

    if args.imu:
        raise ValueError("--imu carries IMU samples: add --task har (ECG takes --record, --input or --serial)")
    _stop_on_sigterm()
    broker, bundle = _device_identity(args)
    classifier, store = _classifier(args)
    speed = None if args.speed == "max" else float(args.speed)
    source, name = ecg_source(args, speed)
    out = Path(args.out)
    annotations = WfdbAnnotationSink(name, out, source.fs_hz, args.extension)
    sinks = [CsvSink(out / f"{name}.csv"), annotations]
    publisher = listener = member = strips = gate = None
    if args.join:
        member = _fleet_member(args, broker, bundle, classifier, _model_bytes(args, store))
        classifier = member.classifier()
        sinks.append(member.memory)
    if broker is not None:
        if args.strips:
            strips, gate = _strip_sharing(args, broker, source.fs_hz)
            sinks.append(strips)
        publisher = device_publisher(args, broker, out, strips=strips, consent=gate)
        publisher.start()
        sinks.append(publisher)
    runtime = EdgeRuntime(classifier, source.fs_hz, sinks, status=publisher.extra_status if publisher else None)
    on_installed = runtime.swap_classifier
    if member is not None:
        member.attach(runtime)
        member.start()
        on_installed = lambda clf: member.on_new_model(clf, _model_bytes(args, store))  # noqa: E731
    if broker is not None and store is not None:
        from edge_runtime.release_listener import ReleaseListener

        listener = ReleaseListener(store, broker, args.fleet, args.device, on_installed)
        if publisher:
            listener.on_verdict = lambda v: publisher.extra_status.update(last_model_update=v.to_dict())
        listener.start()
    try:
        chunks = paced(source, speed)
        stats = runtime.run(strips.tap(chunks) if strips else chunks)
        if member is not None:  # a deployed device stays in the fleet until it is stopped
            log.info("%s: input ended; still taking part in rounds and taking labels until stopped (SIGTERM, "
                     "Ctrl-C)", args.device)
            while not (args.exit_after_final and member.client.finished.is_set()):
                time.sleep(0.5)
    except KeyboardInterrupt:
        stats = runtime.stats
    finally:
        if listener:
            listener.stop()
        if member:
            member.stop()
        if gate:
            gate.stop()
    summary = stats.to_dict()
    if publisher:
        lat = publisher.latencies_ms
        summary["alerts"] = {"sent": publisher.sent, "latency_ms_p50": float(np.percentile(lat, 50)) if lat else None,
                             "latency_ms_p99": float(np.percentile(lat, 99)) if lat else None}
    if isinstance(source, TextSamples):
        summary["malformed_lines"] = source.malformed
    if member is not None:
        summary["fleet"] = {"rounds_sent": member.client.rounds_sent, "labelled_beats": len(member.labels),
                            "personalized_head": member.head is not None, **member.counts}
    print(json.dumps(summary, indent=1))
    print(f"beats: {out / (name + '.csv')}  annotations: {annotations.path}")
    if annotations.beats == 0:
        print(f"no beat detected in {stats.signal_s:.1f} s of signal ({stats.lead_off_s:.1f} s lead-off, "
              f"{stats.invalid_samples} invalid samples): {annotations.path} holds no annotation")
    return 0


def run_anomaly(args: argparse.Namespace) -> int:
    """The anomaly task on the device: the beat pipeline (its classifier labels beats and raises rhythm alerts) with
    the anomaly autoencoder scoring every usable beat; stretches above its threshold raise "anomaly" alerts (over
    the broker with --broker, else counted locally) and the counts go into the status and the summary."""
    from edge_runtime.alerts import AlertBuilder
    from edge_runtime.anomaly_monitor import AnomalyAlerts, AnomalyCounter, AnomalyModel, AnomalySink
    from edge_runtime.runtime import CsvSink, EdgeRuntime
    from edge_runtime.sources import paced

    if not args.anomaly_model:
        raise ValueError("--task anomaly needs --anomaly-model FILE (the int8 export of `pulsewire export --task "
                         "anomaly`) besides the beat classifier (--model or --models)")
    _stop_on_sigterm()
    broker, _ = _device_identity(args)
    classifier, _ = _classifier(args)
    model = AnomalyModel.from_file(Path(args.anomaly_model))
    speed = None if args.speed == "max" else float(args.speed)
    source, name = ecg_source(args, speed)
    out = Path(args.out)
    counter = AnomalyCounter(model)
    builder = AnomalyAlerts(AlertBuilder(args.device, args.patient), counter)
    local = AnomalySink(builder)
    sinks, publisher = [CsvSink(out / f"{name}.csv")], None
    if broker is not None:
        publisher = device_publisher(args, broker, out, builder=builder)
        builder.status_out = publisher.extra_status
        publisher.start()
    sinks.append(publisher or local)
    runtime = EdgeRuntime(classifier, source.fs_hz, sinks, status=publisher.extra_status if publisher else None)
    try:
        stats = runtime.run(paced(source, speed))
    except KeyboardInterrupt:
        stats = runtime.stats
    summary = {**stats.to_dict(), "anomaly": counter.status()}
    if publisher is not None:
        summary["alerts"] = {"sent": publisher.sent}
    else:
        kinds = sorted({a["kind"] for a in local.alerts})
        summary["alerts"] = {kind: sum(a["kind"] == kind for a in local.alerts) for kind in kinds}
    print(json.dumps(summary, indent=1))
    return 0


def run_af(args: argparse.Namespace) -> int:
    """The AF monitor on the device (``tools.af_edge_run``)."""
    from tools.af_edge_run import run_af_device

    _stop_on_sigterm()
    return run_af_device(args, lambda: ecg_source(args, None if args.speed == "max" else float(args.speed)),
                         lambda: _device_identity(args)[0])


def run_activity(args: argparse.Namespace) -> int:
    """The activity task on the device (``tools.activity_run``); a fleet device with --broker or --bundle."""
    from tools.activity_run import run_activity as run_imu_device

    _stop_on_sigterm()
    return run_imu_device(args, lambda: _device_identity(args)[0])


def run_tabular(args: argparse.Namespace) -> int:
    """The tabular task: CSV records (30 raw features per line) from --input FILE or '-' -> OUT/NAME.csv."""
    import csv

    from edge_runtime.tabular_records import TabularScorer
    from edge_runtime.task_model import TaskInterpreter

    if not args.model or not args.input:
        raise ValueError("edge run --task tabular needs --model TABULAR_INT8.tflite and --input RECORDS.csv (or -)")
    scorer = TabularScorer(TaskInterpreter.from_file(Path(args.model)))
    name = "stdin" if args.input == "-" else Path(args.input).stem
    out = Path(args.out) / f"{name}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with (sys.stdin if args.input == "-" else open(args.input)) as lines, open(out, "w", newline="") as f:
        writer = None
        for row in scorer.score(lines):
            writer = writer or csv.DictWriter(f, fieldnames=list(row))
            if f.tell() == 0:
                writer.writeheader()
            writer.writerow(row)
    print(json.dumps({"scored": scorer.stats.scored, "malformed": scorer.stats.malformed,
                      "reasons": scorer.stats.reasons}, indent=1))
    print(f"diagnoses: {out}")
    return 0


#: ``edge run --task NAME`` -> the function that runs that task on the device. A task with an edge side adds its
#: entry here (it gets the parsed arguments; ``--record``/``--input``/``--serial`` name the source).
EDGE_RUNNERS: dict[str, Callable[[argparse.Namespace], int]] = {"beat": run_beats, "af": run_af,
                                                                 "anomaly": run_anomaly, "har": run_activity,
                                                                 "tabular": run_tabular}


def _fleet_member(args: argparse.Namespace, broker, bundle, classifier, content: bytes):
    from edge_runtime.fleet_member import FleetMember
    from edge_runtime.local_dp import LocalDP
    from edge_runtime.personal_head import BaseModel

    local_dp = (LocalDP(clip=args.local_dp_clip, noise_multiplier=args.local_dp_noise,
                        epsilon_budget=args.epsilon_budget) if args.local_dp_noise else None)
    state = Path(args.state or Path(args.bundle).with_suffix(".state"))
    return FleetMember(bundle, broker, state, BaseModel(content, classifier), consent=args.consent,
                       population_head=args.population_head, local_dp=local_dp)


def _strip_sharing(args: argparse.Namespace, broker, fs_hz: float):
    """The strip recorder and the consent gate; waits briefly for the retained consent record so the first
    alerts already know whether they may carry a strip."""
    from edge_runtime.consent_gate import ConsentGate
    from edge_runtime.event_strip import StripRecorder

    key = None
    if args.consent_pubkey:
        from broker.model_release import load_public_key

        key = load_public_key(Path(args.consent_pubkey))
    gate = ConsentGate(args.fleet, args.device, args.patient, broker, key)
    gate.start()
    if not gate.heard.wait(5.0):
        log.info("no consent record for %s yet: alerts go without strips until one arrives", args.patient)
    return StripRecorder(fs_hz), gate


def cmd_selftest(args: argparse.Namespace) -> int:
    from edge_runtime.selftest import run_selftest

    classifier = None
    if not args.model:
        classifier, _ = _classifier(args)
    checks = run_selftest(Path(args.model) if args.model else None, classifier)
    for c in checks:
        print(f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.detail}")
    ok = all(c.passed for c in checks)
    print("selftest passed" if ok else "selftest FAILED")
    return 0 if ok else 1


def add_run_parser(esub) -> None:
    p = esub.add_parser("run", help="stream ECG through filter, R-peak detector and the int8 classifier",
                        description="Classify every beat of a WFDB record, a text file, stdin or a serial port; "
                                    "write <name>.csv and a WFDB annotation file <name>.<extension>.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--record", help="WFDB record path without extension, e.g. ../shared/data/mitdb/100")
    src.add_argument("--input", help="text file with one sample (mV) per line, or '-' for stdin")
    src.add_argument("--serial", help="serial port of an ADC front-end printing one sample per line")
    src.add_argument("--imu", help="--task har: text file of acc x y z (g) + gyro x y z (rad/s) per line, a HAPT "
                                   "acc_*.txt (its gyro_*.txt is joined), or '-' for stdin")
    p.add_argument("--task", default="beat", help="the task to run on the device (default beat; tasks with an edge "
                                                  "runner: see `pulsewire tasks`)")
    p.add_argument("--model", help="int8 .tflite with its .json metadata beside it")
    p.add_argument("--anomaly-model", help="--task anomaly: the autoencoder export (`pulsewire export --task anomaly`)")
    p.add_argument("--models", help="installed-model folder (`edge install`); with --broker, signed releases "
                                    "update it while running")
    p.add_argument("--pubkey", help="aggregator.pub / signing.pub: the key releases must be signed with (default with "
                                    "--bundle: the fleet's signing key from the bundle)")
    add_broker_args(p, help_extra="publish alerts (spooled on disk while unreachable), take releases and rollbacks "
                                  "(with --models); with --bundle only to override the bundle's URL",
                    fleet_config=False)
    fleet = p.add_argument_group("joining a deployed fleet (light install: no TensorFlow)")
    fleet.add_argument("--bundle", help="this device's bundle from `pulsewire device enroll`: fleet, name, id, TLS "
                                        "certificate and keys, the fleet's public keys")
    fleet.add_argument("--join", action="store_true", help="take part in federated rounds with head updates trained "
                                                           "on clinician labels, and take labels (needs --bundle)")
    fleet.add_argument("--state", help="device state folder: labels, personalized head, TLS files (default: next "
                                       "to the bundle, BUNDLE.state)")
    fleet.add_argument("--consent", action="store_true", help="the wearer consented to contributing head updates "
                                                              "(without it the device personalizes but declines rounds)")
    fleet.add_argument("--exit-after-final", action="store_true",
                       help="stop when the aggregator announces its final round (default: run until stopped)")
    fleet.add_argument("--population-head", action="store_true",
                       help="serve the model's own (population) head even when a personalized one exists")
    fleet.add_argument("--local-dp-noise", type=float, help="local DP noise multiplier for head deltas (off unless "
                                                            "given; a round plan can only add noise)")
    fleet.add_argument("--local-dp-clip", type=float, default=1.0, help="local DP clip norm of a head delta")
    fleet.add_argument("--epsilon-budget", type=float, help="decline rounds that would take ε past this")
    p.add_argument("--fleet", default="demo")
    p.add_argument("--device", default="dev1", help="device name in the topic tree")
    p.add_argument("--device-id", type=int, default=1, help="u32 id in wire headers")
    p.add_argument("--patient", default="anonymous", help="pseudonym of the wearer carried in alerts")
    p.add_argument("--spool", help="SQLite alert spool (default: OUT/DEVICE-alerts.sqlite)")
    p.add_argument("--strips", action="store_true", help="fleet policy allows ECG strips: run alerts carry one "
                                                         "while the patient's consent record (from the server) allows")
    p.add_argument("--consent-pubkey", help="the server's public key: accept only consent records it signed")
    p.add_argument("--lead", default="MLII", help="lead name or channel index (WFDB records)")
    p.add_argument("--fs", type=float, default=0.0, help="sampling rate of text/serial input, Hz (resampled to "
                                                         "the model's rate)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--speed", default="max", help="replay speed: 1 (real time), 10, ... or max")
    p.add_argument("--out", default="out/edge", help="folder for the CSV and annotation files")
    p.add_argument("--extension", default="pw", help="annotation file extension")
    add_activity_args(p)
    p.set_defaults(func=cmd_run)


def add_selftest_parser(esub) -> None:
    p = esub.add_parser("selftest", help="check interpreter, model and pipeline on a bundled excerpt: pass/fail")
    p.add_argument("--model", help="int8 .tflite to test (or --models and --pubkey for the installed one)")
    p.add_argument("--models")
    p.add_argument("--pubkey")
    p.add_argument("--fleet", default="demo")
    p.set_defaults(func=cmd_selftest)
