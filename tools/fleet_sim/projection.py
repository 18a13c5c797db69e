"""What a fleet of a million devices would put on the bus, from message sizes measured on the wire format
and the rates of a simulated run: per second and per round, payload and MQTT bytes (PUBLISH + PUBACK)."""
from __future__ import annotations

import numpy as np

from broker.fed_messages import GlobalModel, RoundPlan, encode_global, fleet_id
from broker.topics import FleetTopics
from broker.wire import Encoding, Kind, encode_tensors

#: The classifier of the foundation bench: 4,757 parameters (a full-model update or global model).
MODEL_PARAMETERS = 4757


def mqtt_overhead(topic: str, payload: int) -> int:
    """Bytes MQTT 3.1.1 adds to one QoS 1 PUBLISH of ``payload`` bytes on ``topic``, plus its PUBACK:
    1 type byte, the remaining-length varint, 2 + topic bytes, a 2-byte packet id; PUBACK is 4 bytes."""
    remaining = 2 + len(topic.encode()) + 2 + payload
    varint = 1 if remaining < 128 else 2 if remaining < 16384 else 3 if remaining < 2097152 else 4
    return 1 + varint + 2 + len(topic.encode()) + 2 + 4


def model_sizes(fleet: str) -> dict[str, int]:
    """Encoded bytes of a full int8 update and a float32 global model of ``MODEL_PARAMETERS``."""
    w = [np.linspace(-0.1, 0.1, MODEL_PARAMETERS, dtype=np.float32)]
    fid = fleet_id(fleet)
    return {"update_int8_full_model": len(encode_tensors(Kind.UPDATE, fid, 1, 1, w, Encoding.INT8, meta={"samples": 300})),
            "global_model_float32": len(encode_tensors(Kind.MODEL, fid, 1, 0, w, Encoding.FLOAT32, meta={"round": 1}))}


def announced_model_bytes(fleet: str, selected: int) -> int:
    """Bytes of the round's global model as the aggregator publishes it: the float32 weights plus the plan,
    which names every selected device (names of the simulator's form). Measured with 1,000 names and scaled
    per name: the wire format's metadata holds at most 65,535 bytes, so a plan of more than about 5,000 names
    cannot be sent at all today (``encode_tensors`` refuses it)."""
    weights = [np.zeros(MODEL_PARAMETERS, np.float32)]
    sized = {n: len(encode_global(fleet, GlobalModel(RoundPlan(1, tuple(f"sim{i:06d}" for i in range(n))), weights)))
             for n in (0, 1000)}
    return round(sized[0] + (sized[1000] - sized[0]) * selected / 1000)


def project(report: dict, devices: int = 1_000_000, selected: int = 10_000, round_s: float = 600.0,
            alerts_per_device_per_hour: float | None = None) -> dict:
    """Rates for ``devices`` devices: statuses at the simulated status interval; alerts at
    ``alerts_per_device_per_hour`` (default: the edge runtime's one summary per ``AlertPolicy.summary_every_s``
    of signal; run alerts are rare next to it), sized as measured; and a round of ``round_s`` seconds in
    which ``selected`` devices download the global model and send one update (the head update as
    simulated, and a full-model int8 update for comparison)."""
    if alerts_per_device_per_hour is None:
        from edge_runtime.alerts import AlertPolicy

        alerts_per_device_per_hour = 3600 / AlertPolicy().summary_every_s
    cfg, sizes = report["config"], report["messages"]["mean_bytes_by_kind"]
    t = FleetTopics(cfg["fleet"])
    name = "sim000000"
    models = model_sizes(cfg["fleet"])
    status_b = sizes.get("status", 0.0)
    alert_b = sizes.get("alert", 0.0)
    head_b = sizes.get("update") or len(encode_tensors(Kind.UPDATE, 1, 1, 1, [np.zeros(s, np.float32)
                                                                              for s in cfg["update_shapes"]],
                                                       Encoding.INT8, meta={"samples": 300, "device": name}))
    alerts_per_device_s = alerts_per_device_per_hour / 3600
    rows = [("status", devices / cfg["status_every_s"], status_b, t.status(name)),
            ("alert", alerts_per_device_s * devices, alert_b, t.alert(name)),
            ("update (head, int8)", selected / round_s, head_b, t.update(1, name)),
            ("update (full model, int8)", selected / round_s, models["update_int8_full_model"], t.update(1, name)),
            ("global model download (float32)", selected / round_s, models["global_model_float32"], t.global_model(1)),
            # every device subscribed to the global models receives the announcement, whose plan lists every
            # selected device: the row that dominates a large fleet's rounds today
            ("global model + plan to every subscribed device (as published)", devices / round_s,
             announced_model_bytes(cfg["fleet"], selected), t.global_model(1))]
    table = []
    for kind, per_s, size, topic in rows:
        wire = size + mqtt_overhead(topic, int(size))
        table.append({"kind": kind, "messages_per_s": round(per_s, 1), "payload_bytes": round(size, 1),
                      "wire_bytes": round(wire, 1), "mbit_per_s": round(per_s * wire * 8 / 1e6, 2),
                      "messages_per_round": round(per_s * round_s), "gbytes_per_round": round(per_s * wire * round_s / 1e9, 3)})
    return {"devices": devices, "selected_per_round": selected, "round_seconds": round_s,
            "status_every_s": cfg["status_every_s"], "alerts_per_device_per_hour": round(alerts_per_device_s * 3600, 3),
            "rows": table}


def projection_markdown(p: dict) -> str:
    lines = [f"{p['devices']:,} devices, a status every {p['status_every_s']:.0f} s, "
             f"{p['alerts_per_device_per_hour']} alerts per device per hour, rounds of {p['round_seconds']:.0f} s "
             f"with {p['selected_per_round']:,} selected devices (wire bytes = payload + MQTT PUBLISH header + PUBACK):",
             "", "| message | msg/s | payload B | wire B | Mbit/s | msgs per round | GB per round |",
             "|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        lines.append(f"| {r['kind']} | {r['messages_per_s']:,} | {r['payload_bytes']} | {r['wire_bytes']} | "
                     f"{r['mbit_per_s']} | {r['messages_per_round']:,} | {r['gbytes_per_round']} |")
    return "\n".join(lines)
