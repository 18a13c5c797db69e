"""`pulsewire fleet init` and `pulsewire device enroll`: the fleet folder a deployment starts from.

``fleet init`` is a sub-command of ``pulsewire fleet`` (which, without one, still runs a federated
training over MQTT as before): ``pulsewire fleet init ward --dir fleets/ward``.
"""
from __future__ import annotations

import argparse
import getpass
from pathlib import Path


def cmd_fleet_init(args: argparse.Namespace) -> int:
    from broker.fleet_bootstrap import init_fleet

    folder = Path(args.dir or Path("fleets") / args.name)
    settings = init_fleet(folder, args.name, args.host, args.port, args.listen, tuple(args.server_names),
                          args.broker_user)
    print(f"fleet {settings.name} in {folder}\n"
          f"  broker:     mosquitto -c {settings.broker_folder / 'mosquitto.conf'}   (TLS on port {settings.port})\n"
          f"  aggregator: pulsewire aggregate --fleet-config {folder} --model MODEL_int8.tflite --run-dir RUN\n"
          f"  devices:    pulsewire device enroll NAME --fleet-dir {folder}   (then copy the bundle onto the device)\n"
          f"  keep {folder / 'ca'} offline between enrolments; private keys never leave their sub-folder")
    return 0


def cmd_device_enroll(args: argparse.Namespace) -> int:
    from broker.fleet_bootstrap import enroll_device
    from broker.fleet_config import FleetSettings

    settings, bundle = enroll_device(FleetSettings.load(Path(args.fleet_dir)), args.name, args.id)
    print(f"device {args.name} (id {settings.devices[args.name]}) enrolled in fleet {settings.name}\n"
          f"  bundle: {bundle}  (its own keys + the fleet's public keys; copy it onto this device only)\n"
          f"  on the device: pulsewire edge run --join --bundle {bundle.name} --model MODEL_int8.tflite ...\n"
          f"  reload the broker's ACL: kill -HUP <mosquitto pid> (or restart it)")
    return 0


def add_fleet_init_parser(fleet: argparse.ArgumentParser) -> None:
    """``init`` under the existing ``pulsewire fleet`` command (optional, so ``fleet --rounds ...`` still works)."""
    fsub = fleet.add_subparsers(dest="fleet_command", metavar="{init}",
                                help="`pulsewire fleet init NAME`: create a fleet folder (without a sub-command, "
                                     "`pulsewire fleet` runs federated training over MQTT)")
    p = fsub.add_parser("init", help="create a fleet folder: CA, broker and aggregator certificates, signing keys, "
                                     "Mosquitto config with TLS and ACLs, fleet.toml",
                        description="Write a new fleet folder. Every private key is created in the sub-folder of the "
                                    "component that uses it and never copied (see docs/deployment.md).")
    p.add_argument("name", help="fleet name (topic prefix pw/NAME/...)")
    p.add_argument("--dir", help="fleet folder (default: fleets/NAME); must not hold a fleet yet")
    p.add_argument("--host", default="localhost", help="host name devices use to reach the broker (put in the "
                                                       "broker's certificate and in the broker URL)")
    p.add_argument("--port", type=int, default=8883, help="the broker's TLS port")
    p.add_argument("--listen", default="0.0.0.0", help="address the broker listens on")
    p.add_argument("--server-names", nargs="+", default=["localhost", "127.0.0.1"],
                   help="more host names / IPs the broker's certificate is valid for")
    p.add_argument("--broker-user", default=getpass.getuser(),
                   help="system user Mosquitto runs as (it must read broker/server.key; default: you)")
    p.set_defaults(func=cmd_fleet_init)


def add_device_parser(sub) -> None:
    dev = sub.add_parser("device", help="enroll devices into a fleet folder")
    dsub = dev.add_subparsers(dest="device_command", required=True)
    p = dsub.add_parser("enroll", help="client certificate, ACL entry, keys and a one-file bundle for a device",
                        description="Adds NAME to the fleet: a TLS client certificate (CN = NAME), an Ed25519 key "
                                    "that signs its updates, its ACL block, and devices/NAME.pwdevice, the one file "
                                    "to copy onto the device. Reload Mosquitto's ACL afterwards (SIGHUP).")
    p.add_argument("name", help="device name (its MQTT user name and topic segment)")
    p.add_argument("--fleet-dir", required=True, help="the fleet folder of `pulsewire fleet init`")
    p.add_argument("--id", type=int, help="u32 id in wire headers (default: the next free one)")
    p.set_defaults(func=cmd_device_enroll)
