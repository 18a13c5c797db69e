"""`pulsewire label`: a clinician's confirmed or corrected beat labels of one alert, to that device only.

The CLI side of the clinician loop (the dashboard of the fleet server does the same): the labels are
signed with the clinic's key (``clinic/labels.key`` of the fleet folder) and published retained on
``pw/FLEET/label/DEVICE`` as the clinic identity, the only one the generated ACL lets write there.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tools.broker_args import add_broker_args, fleet_name, fleet_settings, publish_retained


def cmd_label(args: argparse.Namespace) -> int:
    from broker.clinician_labels import BeatLabels, sign_labels
    from broker.model_release import load_private_key
    from broker.topics import FleetTopics

    fleet_cfg, fleet = fleet_settings(args), fleet_name(args)
    key_path = args.labels_key or (fleet_cfg.labels_key if fleet_cfg else None)
    if key_path is None:
        raise ValueError("give the clinic's label key: --labels-key clinic/labels.key, or --fleet-config")
    if len(args.labels) == 1 and len(args.beats) > 1:
        args.labels = args.labels * len(args.beats)  # one label for every beat
    doc = BeatLabels(fleet, args.device, args.alert, tuple(args.beats), tuple(args.labels), int(time.time() * 1000))
    data = sign_labels(doc, load_private_key(Path(key_path)))
    publish_retained(args, "clinic", f"pw-{fleet}-clinic-{args.device}", FleetTopics(fleet).label(args.device), data)
    print(json.dumps({"fleet": fleet, "device": args.device, "alert": args.alert, "beats": len(doc.beats),
                      "labels": dict(sorted({c: doc.labels.count(c) for c in set(doc.labels)}.items()))}))
    return 0


def add_label_parser(sub) -> None:
    p = sub.add_parser("label", help="send a clinician's beat labels of an alert to one device (signed)",
                       description="Confirm or correct the classes of an alert's beats. The device retrains its "
                                   "head on them, serves the personalized head from then on and contributes its "
                                   "delta in the next round (with its DP settings and the wearer's consent).")
    p.add_argument("--device", required=True, help="the device whose alert this is")
    p.add_argument("--alert", required=True, help="alert id (from the alert message or the dashboard)")
    p.add_argument("--beats", type=int, nargs="+", required=True, help="sample indices of the beats (as in the "
                                                                       "device's beat CSV and alerts)")
    p.add_argument("--labels", nargs="+", required=True, help="one class per beat (N S V F Q), or one for all")
    p.add_argument("--fleet", help="fleet name (default: from --fleet-config)")
    p.add_argument("--labels-key", help="the clinic's Ed25519 label key (default: clinic/labels.key of the fleet)")
    add_broker_args(p)
    p.set_defaults(func=cmd_label)
