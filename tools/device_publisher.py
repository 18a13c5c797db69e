"""The spooled alert publisher of an `edge run` device: one rule for every task's runner (beat, AF, anomaly,
activity), so the device identity and the spool's default place cannot drift apart between tasks."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def device_publisher(args: argparse.Namespace, broker: Any, out: Path, **options: Any):
    """An ``AlertPublisher`` for ``args``' device (``--device``, ``--device-id``, ``--fleet``, ``--patient``) with
    its spool at ``--spool``, else ``OUT/<device>-alerts.sqlite``; ``options`` go to the publisher as they are."""
    from edge_runtime.alert_publisher import AlertPublisher

    return AlertPublisher(args.device, args.device_id, args.fleet, broker,
                          Path(args.spool or Path(out) / f"{args.device}-alerts.sqlite"), args.patient, **options)
