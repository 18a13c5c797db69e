"""The broker flags every MQTT command shares: ``--broker --ca --cert --key --username --fleet-config``.

One place turns them into ``broker.mqtt_link.BrokerSettings``: explicit flags win over the fleet
config file (``fleet.toml`` of ``pulsewire fleet init``), which supplies the URL, the CA and the
certificate of the identity the command runs as (the aggregator for rounds and releases, the clinic
for labels). A device uses its bundle instead (``edge run --bundle``).
"""
from __future__ import annotations

import argparse

from broker.fleet_config import FleetSettings
from broker.mqtt_link import BrokerSettings


def add_broker_args(p: argparse.ArgumentParser, required: bool = False, help_extra: str = "",
                    fleet_config: bool = True) -> None:
    g = p.add_argument_group("broker connection (mqtts:// needs --ca, and --cert/--key of an enrolled identity)")
    g.add_argument("--broker", required=required,
                   help="mqtt://HOST:PORT or mqtts://HOST:PORT" + (f"; {help_extra}" if help_extra else "")
                        + (" (default with --fleet-config: its broker_url)" if fleet_config else ""))
    g.add_argument("--ca", help="the fleet's CA certificate (PEM): checks the broker's certificate")
    g.add_argument("--cert", help="this client's certificate (PEM); its common name is its MQTT user name")
    g.add_argument("--key", dest="tls_key", help="this client's private key (PEM)")
    g.add_argument("--username", help="MQTT user name for brokers that authenticate by name")
    g.add_argument("--connect-timeout", type=float, default=15.0, help="seconds to wait for the broker (default 15)")
    if fleet_config:
        g.add_argument("--fleet-config", help="fleet.toml (or its folder) from `pulsewire fleet init`: broker URL, "
                                              "CA and this command's certificate, fleet name, devices, keys")


def fleet_settings(args: argparse.Namespace) -> FleetSettings | None:
    path = getattr(args, "fleet_config", None)
    return FleetSettings.load(path) if path else None


def broker_settings(args: argparse.Namespace, identity: str = "aggregator") -> BrokerSettings | None:
    """The connection settings the flags describe; None when no broker was given at all."""
    fleet = fleet_settings(args)
    url = args.broker or (fleet.broker_url if fleet else None)
    if url is None:
        return None
    base = fleet.broker(identity, url) if fleet else BrokerSettings.of(url) if not url.startswith("mqtts://") \
        else None
    ca = args.ca or (base.ca if base else None)
    cert = args.cert or (base.cert if base else None)
    key = args.tls_key or (base.key if base else None)
    return BrokerSettings(url, ca, cert, key, args.username)


def fleet_name(args: argparse.Namespace) -> str:
    """``--fleet``, else the fleet config's name; a usage error without either."""
    if getattr(args, "fleet", None):
        return args.fleet
    fleet = fleet_settings(args)
    if fleet is None:
        raise ValueError("name the fleet: --fleet NAME, or --fleet-config fleet.toml")
    return fleet.name


def publish_retained(args: argparse.Namespace, identity: str, client_id: str, topic: str, data: bytes) -> None:
    """Connect as ``identity``, publish ``data`` retained with QoS 1, wait for the broker's acknowledgement."""
    from broker.mqtt_link import MqttLink

    settings = broker_settings(args, identity)
    if settings is None:
        raise ValueError("give --broker URL (with --ca/--cert/--key for mqtts://) or --fleet-config")
    link = MqttLink(settings, client_id, [], lambda _m: None)
    link.start(timeout_s=args.connect_timeout)
    try:
        info = link.publish(topic, data, qos=1, retain=True)
        info.wait_for_publish(timeout=30)
        if not info.is_published():
            raise ValueError(f"the broker did not acknowledge {topic}; check the connection and the broker's log")
    finally:
        link.stop()
