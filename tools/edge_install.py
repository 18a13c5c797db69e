"""Keys, certificates and the first model of a device: `pulsewire keys`, `pulsewire certs` and
`pulsewire edge install`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


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


def add_keys_parser(sub) -> None:
    p = sub.add_parser("keys", help="create the aggregator's Ed25519 key pair for signing model releases")
    p.add_argument("--out", default="keys", help="folder for aggregator.key and aggregator.pub")
    p.set_defaults(func=cmd_keys)


def add_certs_parser(sub) -> None:
    p = sub.add_parser("certs", help="a CA, TLS server and per-device client certificates, ACLs and a "
                                     "Mosquitto config for a production fleet")
    p.add_argument("--fleet", required=True)
    p.add_argument("--devices", required=True, help="device names, comma separated (their certificates' CN)")
    p.add_argument("--server-names", nargs="+", default=["localhost", "127.0.0.1"],
                   help="host names / IPs the broker's certificate is valid for")
    p.add_argument("--port", type=int, default=8883)
    p.add_argument("--out", default="fleet-security")
    p.set_defaults(func=cmd_certs)


def add_install_parser(esub) -> None:
    p = esub.add_parser("install", help="install a first model into a model folder (checked like a release)")
    p.add_argument("--release", help="signed release file (`pulsewire release --out FILE`): no private key needed here")
    p.add_argument("--model", help="int8 .tflite to sign here instead (with --signing-key)")
    p.add_argument("--models", required=True, help="installed-model folder")
    p.add_argument("--signing-key", help="the fleet's signing key (only where it lives: never copy it to a device)")
    p.add_argument("--pubkey", required=True, help="the fleet's public signing key (signing.pub / aggregator.pub)")
    p.add_argument("--fleet", default="demo")
    p.add_argument("--version", type=int, default=1)
    p.set_defaults(func=cmd_install)
