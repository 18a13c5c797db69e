"""`pulsewire edge ...`: run the device pipeline on a record or a stream, and score its output."""
from __future__ import annotations

import argparse
import json

import numpy as np
import logging
import sys
from pathlib import Path

log = logging.getLogger("pulsewire.edge")


def _classifier(args: argparse.Namespace):
    from edge_runtime.classifier import BeatClassifier

    if args.model:
        return BeatClassifier.from_file(Path(args.model)), None
    if not (args.models and args.pubkey):
        raise SystemExit("pulsewire: error: give --model FILE, or --models DIR and --pubkey PEM "
                         "(install a first model with `pulsewire edge install`)")
    from broker.model_release import load_public_key
    from edge_runtime.model_store import ModelStore

    store = ModelStore(Path(args.models), load_public_key(Path(args.pubkey)), args.fleet)
    return store.load_current(), store


def cmd_run(args: argparse.Namespace) -> int:
    from edge_runtime.runtime import CsvSink, EdgeRuntime, WfdbAnnotationSink
    from edge_runtime.sources import TextSamples, WfdbReplay, paced, serial_lines, text_file

    classifier, store = _classifier(args)
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
    annotations = WfdbAnnotationSink(name, out, source.fs_hz, args.extension)
    sinks = [CsvSink(out / f"{name}.csv"), annotations]
    publisher = listener = None
    if args.broker:
        from edge_runtime.alert_publisher import AlertPublisher

        publisher = AlertPublisher(args.device, args.device_id, args.fleet, args.broker,
                                   Path(args.spool or out / f"{args.device}-alerts.sqlite"), args.patient)
        publisher.start()
        sinks.append(publisher)
    runtime = EdgeRuntime(classifier, source.fs_hz, sinks, status=publisher.extra_status if publisher else None)
    if args.broker and store is not None:
        from edge_runtime.release_listener import ReleaseListener

        listener = ReleaseListener(store, args.broker, args.fleet, args.device, runtime.swap_classifier)
        if publisher:
            listener.on_verdict = lambda v: publisher.extra_status.update(last_model_update=v.to_dict())
        listener.start()
    try:
        stats = runtime.run(paced(source, speed))
    finally:
        if listener:
            listener.stop()
    summary = stats.to_dict()
    if publisher:
        lat = publisher.latencies_ms
        summary["alerts"] = {"sent": publisher.sent, "latency_ms_p50": float(np.percentile(lat, 50)) if lat else None,
                             "latency_ms_p99": float(np.percentile(lat, 99)) if lat else None}
    if isinstance(source, TextSamples):
        summary["malformed_lines"] = source.malformed
    print(json.dumps(summary, indent=1))
    print(f"beats: {out / (name + '.csv')}  annotations: {annotations.path}")
    if annotations.beats == 0:
        print(f"no beat detected in {stats.signal_s:.1f} s of signal ({stats.lead_off_s:.1f} s lead-off, "
              f"{stats.invalid_samples} invalid samples): {annotations.path} holds no annotation")
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


def cmd_install(args: argparse.Namespace) -> int:
    """The operator's first install (a local, trusted file): signed releases replace it later."""
    from broker.model_release import Release, load_private_key, load_public_key, sign_release
    from edge_runtime.model_metadata import ModelMetadata, metadata_path_for
    from edge_runtime.model_store import ModelStore

    model = Path(args.model)
    meta = ModelMetadata.load(metadata_path_for(model))
    private = load_private_key(Path(args.key))
    store = ModelStore(Path(args.models), load_public_key(Path(args.pubkey)), args.fleet)
    release = Release(args.fleet, args.version, model.read_bytes(), meta.to_json().encode(), meta.signal.digest())
    verdict = store.consider(sign_release(release, private))
    print(json.dumps(verdict.to_dict()))
    return 0 if verdict.accepted else 2


def cmd_keys(args: argparse.Namespace) -> int:
    from broker.model_release import generate_keys

    private, public = generate_keys(Path(args.out))
    print(f"private key: {private} (keep it on the aggregator only)\npublic key:  {public} (copy to every device)")
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from broker.fleet_security import write_fleet_security

    sec = write_fleet_security(Path(args.out), args.fleet, args.devices.split(","), tuple(args.server_names),
                               args.port)
    print(f"CA, server, aggregator and {len(args.devices.split(','))} device certificates in {sec.folder}\n"
          f"start the broker: mosquitto -c {sec.config}\n"
          f"each device gets ca.crt, <device>.crt and <device>.key; connect with mqtts://HOST:{args.port}")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    """Sign a model and publish it, retained, on pw/FLEET/release."""
    from broker.model_release import Release, load_private_key, sign_release
    from broker.mqtt_link import MqttLink
    from broker.topics import FleetTopics
    from edge_runtime.model_metadata import ModelMetadata, metadata_path_for

    model = Path(args.model)
    meta = ModelMetadata.load(metadata_path_for(model))
    data = sign_release(Release(args.fleet, args.version, model.read_bytes(), meta.to_json().encode(),
                                meta.signal.digest()), load_private_key(Path(args.key)))
    link = MqttLink(args.broker, f"pw-{args.fleet}-release-{args.version}", [], lambda _m: None)
    link.start()
    info = link.publish(FleetTopics(args.fleet).release(), data, qos=1, retain=True)
    info.wait_for_publish(timeout=30)
    link.stop()
    print(f"published release {args.version} of {model.name} ({len(data)} bytes) to fleet {args.fleet}")
    return 0


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


def add_edge_parser(sub) -> None:
    p = sub.add_parser("keys", help="create the aggregator's Ed25519 key pair for signing model releases")
    p.add_argument("--out", default="keys", help="folder for aggregator.key and aggregator.pub")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("certs", help="a CA, TLS server and per-device client certificates, ACLs and a "
                                     "Mosquitto config for a production fleet")
    p.add_argument("--fleet", required=True)
    p.add_argument("--devices", required=True, help="device names, comma separated (their certificates' CN)")
    p.add_argument("--server-names", nargs="+", default=["localhost", "127.0.0.1"],
                   help="host names / IPs the broker's certificate is valid for")
    p.add_argument("--port", type=int, default=8883)
    p.add_argument("--out", default="fleet-security")
    p.set_defaults(func=cmd_certs)

    p = sub.add_parser("release", help="sign an int8 model and publish it to a fleet (retained)")
    p.add_argument("--model", required=True, help=".tflite with its .json metadata beside it")
    p.add_argument("--key", required=True, help="aggregator.key (Ed25519, PEM)")
    p.add_argument("--version", type=int, required=True, help="release number; devices install only newer ones")
    p.add_argument("--fleet", required=True)
    p.add_argument("--broker", required=True, help="mqtt://HOST:PORT")
    p.set_defaults(func=cmd_release)

    edge = sub.add_parser("edge", help="the device pipeline: run it on a record or stream, score its output")
    esub = edge.add_subparsers(dest="edge_command", required=True)

    p = esub.add_parser("run", help="stream ECG through filter, R-peak detector and the int8 classifier",
                        description="Classify every beat of a WFDB record, a text file, stdin or a serial port; "
                                    "write <name>.csv and a WFDB annotation file <name>.<extension>.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--record", help="WFDB record path without extension, e.g. ../shared/data/mitdb/100")
    src.add_argument("--input", help="text file with one sample (mV) per line, or '-' for stdin")
    src.add_argument("--serial", help="serial port of an ADC front-end printing one sample per line")
    p.add_argument("--model", help="int8 .tflite with its .json metadata beside it")
    p.add_argument("--models", help="installed-model folder (`edge install`); with --broker, signed releases "
                                    "update it while running")
    p.add_argument("--pubkey", help="aggregator.pub: the key releases must be signed with")
    p.add_argument("--broker", help="mqtt://HOST:PORT: publish alerts (spooled on disk while unreachable)")
    p.add_argument("--fleet", default="demo")
    p.add_argument("--device", default="dev1", help="device name in the topic tree")
    p.add_argument("--device-id", type=int, default=1, help="u32 id in wire headers")
    p.add_argument("--patient", default="anonymous", help="pseudonym of the wearer carried in alerts")
    p.add_argument("--spool", help="SQLite alert spool (default: OUT/DEVICE-alerts.sqlite)")
    p.add_argument("--lead", default="MLII", help="lead name or channel index (WFDB records)")
    p.add_argument("--fs", type=float, default=0.0, help="sampling rate of text/serial input, Hz (resampled to "
                                                         "the model's rate)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--speed", default="max", help="replay speed: 1 (real time), 10, ... or max")
    p.add_argument("--out", default="out/edge", help="folder for the CSV and annotation files")
    p.add_argument("--extension", default="pw", help="annotation file extension")
    p.set_defaults(func=cmd_run)

    p = esub.add_parser("selftest", help="check interpreter, model and pipeline on a bundled excerpt: pass/fail")
    p.add_argument("--model", help="int8 .tflite to test (or --models and --pubkey for the installed one)")
    p.add_argument("--models")
    p.add_argument("--pubkey")
    p.add_argument("--fleet", default="demo")
    p.set_defaults(func=cmd_selftest)

    p = esub.add_parser("bench", help="R-peak detection vs peers on every record, end-to-end speed, alert latency")
    p.add_argument("--data-dir", help="MIT-BIH folder (default $MITDB_DIR)")
    p.add_argument("--records", nargs="+", help="default: all records listed in RECORDS")
    p.add_argument("--model", help="int8 model for the end-to-end and latency parts (skipped without)")
    p.add_argument("--e2e-records", nargs="+", default=["100", "108", "203", "208", "232"])
    p.add_argument("--latency-seconds", type=float, default=120.0)
    p.add_argument("--json", default="bench/results/edge.json")
    p.set_defaults(func=cmd_bench)

    from tools.robustness_commands import add_robustness_parser

    add_robustness_parser(esub)

    p = esub.add_parser("install", help="install a first model into a model folder (checked like a release)")
    p.add_argument("--model", required=True)
    p.add_argument("--models", required=True, help="installed-model folder")
    p.add_argument("--key", required=True, help="aggregator.key")
    p.add_argument("--pubkey", required=True, help="aggregator.pub")
    p.add_argument("--fleet", default="demo")
    p.add_argument("--version", type=int, default=1)
    p.set_defaults(func=cmd_install)

    p = esub.add_parser("score", help="compare beat annotations with the reference, beat by beat (EC57 style)",
                        description="Match beats within 150 ms, excluding ventricular flutter episodes; print "
                                    "detection Se/+P and per-class Se/+P of the AAMI classes.")
    p.add_argument("--record", required=True, help="WFDB record path without extension (reference annotations)")
    p.add_argument("--reference", default="atr", help="reference annotation extension")
    p.add_argument("--annotations-dir", default="out/edge", help="folder of the annotations to score")
    p.add_argument("--extension", default="pw")
    p.add_argument("--json", help="also write the full report here")
    p.set_defaults(func=cmd_score)
