"""`pulsewire edge ...`: run the device pipeline on a record or a stream, and score its output."""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import logging
import sys
from pathlib import Path

from tools.broker_args import add_broker_args

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
    from edge_runtime.runtime import CsvSink, EdgeRuntime, WfdbAnnotationSink
    from edge_runtime.sources import TextSamples, WfdbReplay, paced, serial_lines, text_file

    _stop_on_sigterm()
    broker, bundle = _device_identity(args)
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
    publisher = listener = member = strips = gate = None
    if args.join:
        member = _fleet_member(args, broker, bundle, classifier, _model_bytes(args, store))
        classifier = member.classifier()
        sinks.append(member.memory)
    if broker is not None:
        from edge_runtime.alert_publisher import AlertPublisher

        if args.strips:
            strips, gate = _strip_sharing(args, broker, source.fs_hz)
            sinks.append(strips)
        publisher = AlertPublisher(args.device, args.device_id, args.fleet, broker,
                                   Path(args.spool or out / f"{args.device}-alerts.sqlite"), args.patient,
                                   strips=strips, consent=gate)
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
    """The first install on a device: a signed release file (`pulsewire release --out`), checked like one
    from the broker. ``--model`` with ``--signing-key`` signs locally: only where the signing key already is."""
    from broker.model_release import Release, load_private_key, load_public_key, sign_release
    from edge_runtime.model_metadata import ModelMetadata, metadata_path_for
    from edge_runtime.model_store import ModelStore

    store = ModelStore(Path(args.models), load_public_key(Path(args.pubkey)), args.fleet)
    if args.release:
        data = Path(args.release).read_bytes()
    elif args.model and args.signing_key:
        model = Path(args.model)
        meta = ModelMetadata.load(metadata_path_for(model))
        data = sign_release(Release(args.fleet, args.version, model.read_bytes(), meta.to_json().encode(),
                                    meta.signal.digest()), load_private_key(Path(args.signing_key)))
    else:
        raise ValueError("give --release FILE (from `pulsewire release --out FILE`), or --model with --signing-key "
                         "on the machine that holds the signing key")
    verdict = store.consider(data)
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
          f"each device gets ca.crt, <device>.crt and <device>.key; connect with --broker mqtts://HOST:{args.port} "
          f"--ca ca.crt --cert <device>.crt --key <device>.key\n"
          f"(`pulsewire fleet init` makes a complete fleet folder with signing keys and device bundles)")
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


def cmd_dp_reset(args: argparse.Namespace) -> int:
    """Start a device's local-DP ledger afresh: the explicit, logged step a device with a lost ledger needs."""
    from edge_runtime.ledger_store import LEDGER_FILE, LedgerStore, reset_ledger

    state = Path(args.state_dir)
    if not state.is_dir():
        print(f"pulsewire: error: {state} is not a directory; give the device's state folder (where its alert "
              f"spool and {LEDGER_FILE} live)", file=sys.stderr)
        return 2
    if not args.yes:
        store = LedgerStore(state, 1.0) if (state / LEDGER_FILE).exists() else None
        now = (store.lost or f"intact: {len(store.ledger.rows)} release(s), epsilon {store.ledger.epsilon:.4g}"
               if store else "no ledger")
        if store is not None:
            store.close()
        print(f"pulsewire: error: the ledger in {state} is {now}. Resetting forgets every release it holds and "
              f"lets the device spend a new budget; repeat with --yes to do it (the reset is logged and kept in "
              f"the new ledger)", file=sys.stderr)
        return 2
    moved = reset_ledger(state, args.reason)
    print(f"privacy ledger in {state} reset" + (f"; the old one is kept as {moved}" if moved else ""))
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

    __import__("tools.release_commands").release_commands.add_release_parser(sub)

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
    p.add_argument("--json", default="out/bench/edge.json",
                   help="results path (default: out/bench/edge.json; the committed bench/results/edge.json is "
                        "written only when asked for, as `make bench` does)")
    p.set_defaults(func=cmd_bench)

    from tools.robustness_commands import add_robustness_parser

    add_robustness_parser(esub)

    p = esub.add_parser("install", help="install a first model into a model folder (checked like a release)")
    p.add_argument("--release", help="signed release file (`pulsewire release --out FILE`): no private key needed here")
    p.add_argument("--model", help="int8 .tflite to sign here instead (with --signing-key)")
    p.add_argument("--models", required=True, help="installed-model folder")
    p.add_argument("--signing-key", help="the fleet's signing key (only where it lives: never copy it to a device)")
    p.add_argument("--pubkey", required=True, help="the fleet's public signing key (signing.pub / aggregator.pub)")
    p.add_argument("--fleet", default="demo")
    p.add_argument("--version", type=int, default=1)
    p.set_defaults(func=cmd_install)

    p = esub.add_parser("dp-reset", help="start a device's local-DP ledger afresh (after it was lost); logged",
                        description="A device whose privacy ledger is missing or damaged refuses to train. This "
                                    "starts a new, empty ledger in its state folder, keeps the old file beside "
                                    "it and records the reset (with --reason) in the new ledger.")
    p.add_argument("--state-dir", required=True, help="the device's state folder (alert spool and ledger)")
    p.add_argument("--reason", default="operator reset", help="why: kept with the reset")
    p.add_argument("--yes", action="store_true", help="really reset (without it: show the ledger's state)")
    p.set_defaults(func=cmd_dp_reset)

    p = esub.add_parser("score", help="compare beat annotations with the reference, beat by beat (EC57 style)",
                        description="Match beats within 150 ms, excluding ventricular flutter episodes; print "
                                    "detection Se/+P and per-class Se/+P of the AAMI classes.")
    p.add_argument("--record", required=True, help="WFDB record path without extension (reference annotations)")
    p.add_argument("--reference", default="atr", help="reference annotation extension")
    p.add_argument("--annotations-dir", default="out/edge", help="folder of the annotations to score")
    p.add_argument("--extension", default="pw")
    p.add_argument("--json", help="also write the full report here")
    p.set_defaults(func=cmd_score)
