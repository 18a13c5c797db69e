"""`pulsewire release` (sign and publish a model) and `pulsewire release rollback` (a signed pin).

Both run where the fleet's signing key is (the aggregator's folder) and connect as the aggregator,
the one identity the generated ACL lets write releases and pins.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from tools.broker_args import add_broker_args, broker_settings, fleet_name, fleet_settings, publish_retained


def _signing_key(args: argparse.Namespace):
    from broker.model_release import load_private_key

    fleet = fleet_settings(args)
    path = args.signing_key or (fleet.signing_key if fleet else None)
    if path is None:
        raise ValueError("give the fleet's signing key: --signing-key aggregator/signing.key, or --fleet-config")
    return load_private_key(Path(path))


def cmd_release(args: argparse.Namespace) -> int:
    """Sign a model and publish it, retained, on pw/FLEET/release (or write it to --out)."""
    from broker.model_release import Release, sign_release
    from broker.topics import FleetTopics
    from edge_runtime.model_metadata import ModelMetadata, metadata_path_for

    if not args.model or args.version is None:
        raise ValueError("give --model FILE.tflite and --version N (or use `pulsewire release rollback`)")
    fleet = fleet_name(args)
    model = Path(args.model)
    meta = ModelMetadata.load(metadata_path_for(model))
    data = sign_release(Release(fleet, args.version, model.read_bytes(), meta.to_json().encode(),
                                meta.signal.digest()), _signing_key(args))
    if args.out:
        Path(args.out).write_bytes(data)
        print(f"signed release {args.version} of {model.name} ({len(data)} bytes) in {args.out}; install it on a "
              f"device with `pulsewire edge install --release {args.out} --pubkey signing.pub`")
        return 0
    publish_retained(args, "aggregator", f"pw-{fleet}-release-{args.version}", FleetTopics(fleet).release(), data)
    print(f"published release {args.version} of {model.name} ({len(data)} bytes) to fleet {fleet}")
    return 0


def _retained_release_version(args: argparse.Namespace, fleet: str) -> int | None:
    """The version of the release the broker holds retained (the one devices would reinstall), if any."""
    from broker.model_release import ReleaseError, load_public_key, verify_release
    from broker.mqtt_link import MqttLink
    from broker.topics import FleetTopics

    got: list[bytes] = []
    arrived = threading.Event()
    settings = broker_settings(args, "aggregator")

    def on_message(msg) -> None:
        got.append(msg.payload)
        arrived.set()

    # the generated ACL lets the aggregator read back what it published on the release topic
    link = MqttLink(settings, f"pw-{fleet}-rollback-read", [FleetTopics(fleet).release()], on_message)
    link.start(timeout_s=args.connect_timeout)
    arrived.wait(1.5)
    link.stop()
    if not got or not got[0]:
        return None
    fleet_cfg = fleet_settings(args)
    try:
        pub = load_public_key(fleet_cfg.signing_pub) if fleet_cfg else _signing_key(args).public_key()
        return verify_release(got[0], pub).version
    except ReleaseError:
        return None


def cmd_rollback(args: argparse.Namespace) -> int:
    from broker.model_pin import Pin, sign_pin
    from broker.topics import FleetTopics

    fleet = fleet_name(args)
    revoked = list(args.revoke or [])
    if not revoked:
        retained = _retained_release_version(args, fleet)
        if retained is not None and retained > args.version:
            revoked = [retained]
    if not revoked:
        raise ValueError("name the versions to revoke (--revoke N ...): the broker's retained release could not be "
                         "read to find it")
    pin = Pin(fleet, args.version, tuple(sorted(set(revoked))), int(time.time() * 1000))
    publish_retained(args, "aggregator", f"pw-{fleet}-pin", FleetTopics(fleet).pin(), sign_pin(pin, _signing_key(args)))
    print(json.dumps({"fleet": fleet, "pinned": pin.version, "revoked": list(pin.revoked), "sequence": pin.sequence}))
    return 0


def add_release_parser(sub) -> None:
    p = sub.add_parser("release", help="sign an int8 model and publish it to a fleet (retained); `release rollback`",
                       description="Sign a model with the fleet's signing key and publish it retained on "
                                   "pw/FLEET/release (devices install it when it is newer, verified and runs). "
                                   "`pulsewire release rollback --version N` pins the fleet to N instead.")
    p.add_argument("--model", help=".tflite with its .json metadata beside it")
    p.add_argument("--signing-key", help="the fleet's Ed25519 signing key (aggregator/signing.key of the fleet "
                                         "folder, or aggregator.key of `pulsewire keys`)")
    p.add_argument("--version", type=int, help="release number; devices install only newer ones")
    p.add_argument("--fleet", help="fleet name (default: from --fleet-config)")
    p.add_argument("--out", help="write the signed release to this file instead of publishing it")
    add_broker_args(p)
    p.set_defaults(func=cmd_release)
    rsub = p.add_subparsers(dest="release_command", metavar="{rollback}")
    r = rsub.add_parser("rollback", help="pin the fleet to a version and revoke newer ones (signed, retained)",
                        description="Publish a signed pin on pw/FLEET/pin (retained): devices go back to --version "
                                    "between two beats and refuse the revoked versions, also when the retained "
                                    "release is delivered again after a reconnect.")
    r.add_argument("--version", type=int, required=True, help="the version devices run from now on")
    r.add_argument("--revoke", type=int, nargs="+", help="versions never to install again (default: the release "
                                                         "the broker holds retained, when newer than --version)")
    r.add_argument("--fleet", help="fleet name (default: from --fleet-config)")
    r.add_argument("--signing-key", help="the fleet's Ed25519 signing key")
    add_broker_args(r)
    r.set_defaults(func=cmd_rollback)
