"""Firmware for boards whose model is compiled in: `pulsewire firmware release` (a signed image in CHUNK
messages on pw/FLEET/firmware) and `pulsewire firmware keyheader` (the release key as a C header)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.broker_args import add_broker_args


def cmd_release(args: argparse.Namespace) -> int:
    """Sign a board image (model compiled in) and publish it in CHUNK messages on pw/FLEET/firmware."""
    import secrets

    from broker.model_release import load_private_key
    from broker.mqtt_link import MqttLink
    from broker.topics import FleetTopics
    from tools.broker_args import broker_settings, fleet_name, fleet_settings
    from training.codegen.release import firmware_chunks, firmware_payload

    fleet_cfg, args.fleet = fleet_settings(args), fleet_name(args)
    key_path = args.signing_key or (fleet_cfg.signing_key if fleet_cfg else None)
    if key_path is None:
        raise ValueError("give the fleet's signing key: --signing-key aggregator/signing.key, or --fleet-config")
    image = Path(args.image).read_bytes()
    payload = firmware_payload(image, load_private_key(Path(key_path)), args.fleet, args.version)
    chunks = firmware_chunks(payload, args.fleet, args.version, secrets.randbits(32), args.chunk_size)
    if args.out:
        Path(args.out).write_bytes(b"".join(len(c).to_bytes(4, "little") + c for c in chunks))
        print(f"{len(chunks)} chunks ({len(payload)} bytes) in {args.out}")
        return 0
    settings = broker_settings(args, "aggregator")
    if settings is None:
        raise ValueError("give --broker URL (with --ca/--cert/--key for mqtts://), --fleet-config, or --out FILE")
    link = MqttLink(settings, f"pw-{args.fleet}-firmware-{args.version}", [], lambda _m: None)
    link.start(timeout_s=args.connect_timeout)
    for chunk in chunks:  # QoS 1 in order on one topic: boards need the chunks in index order
        link.publish(FleetTopics(args.fleet).firmware(), chunk, qos=1).wait_for_publish(timeout=30)
    link.stop()
    print(f"published firmware {args.version} ({len(image)} bytes, {len(chunks)} chunks) to fleet {args.fleet}")
    return 0


def cmd_keyheader(args: argparse.Namespace) -> int:
    pubkey = Path(args.pubkey)
    if not pubkey.is_file():
        print(f"pulsewire: error: {pubkey} not found: the fleet's public release key (aggregator.pub, written by "
              "`pulsewire keys` or `pulsewire fleet init`)", file=sys.stderr)
        return 2
    from training.codegen.release import release_key_header

    try:
        text = release_key_header(pubkey)
    except ValueError as exc:
        print(f"pulsewire: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"release key {text.split('sha256 ')[1][:16]}... from {pubkey} -> {out}")
    return 0


def add_release_parser(fsub) -> None:
    p = fsub.add_parser("release", help="sign a board image and publish it in CHUNK messages (firmware/core/pw_update.h)",
                        description="For boards whose model is compiled in, a new model is a new image: signed "
                                    "with the aggregator's release key, streamed to pw/FLEET/firmware.")
    p.add_argument("--image", required=True, help="the board's application image (e.g. .pio/build/esp32dev/firmware.bin)")
    p.add_argument("--signing-key", help="the fleet's Ed25519 signing key (aggregator/signing.key of the fleet folder, "
                                         "or aggregator.key of `pulsewire keys`; default: from --fleet-config)")
    p.add_argument("--fleet", help="fleet name (default: from --fleet-config)")
    p.add_argument("--version", type=int, required=True, help="boards install only versions newer than theirs")
    p.add_argument("--chunk-size", type=int, default=1024, help="bytes per MQTT message (board buffer)")
    p.add_argument("--out", help="write the chunks to a file instead of publishing (u32 length + message, repeated)")
    add_broker_args(p)
    p.set_defaults(func=cmd_release)


def add_keyheader_parser(fsub) -> None:
    p = fsub.add_parser("keyheader", help="write the C header with the fleet's release key for a board build",
                        description="The ESP32 build refuses to start without it: boards verify signed firmware "
                                    "with this key (firmware/README.md).")
    p.add_argument("--pubkey", required=True, help="the fleet's aggregator.pub (Ed25519, PEM)")
    p.add_argument("--out", default="firmware/boards/esp32/include/pw_release_key.h", help="header to write")
    p.set_defaults(func=cmd_keyheader)
