"""`pulsewire broker`: a local MQTT broker in the foreground (Mosquitto when installed, else the embedded
one) for setups where several processes share it, e.g. `make demo`'s federation, edge devices and server."""
from __future__ import annotations

import argparse
import logging
import signal
import threading

log = logging.getLogger("pulsewire.broker")


def cmd_broker(args: argparse.Namespace) -> int:
    from broker.launcher import broker_url, start_broker

    broker = start_broker(args.kind, port=args.port)
    print(f"broker: {broker_url(broker)} ({broker.kind}); stop with Ctrl-C or SIGTERM", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.close()
    return 0


def add_broker_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("broker", help="run a local MQTT broker in the foreground",
                       description="A loopback MQTT broker for the fleet, its devices and the server: Mosquitto "
                                   "when installed, else the embedded amqtt broker.")
    p.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (default: a free one, printed)")
    p.add_argument("--kind", choices=("auto", "mosquitto", "embedded"), default="auto")
    p.set_defaults(func=cmd_broker)
