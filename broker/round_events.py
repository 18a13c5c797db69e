"""Round events: what the aggregator tells the fleet server about each round, so the server needs only the bus.

Published on ``pw/{fleet}/round/{round}/{event}`` (QoS 1, not retained) as one canonical JSON object
(sorted keys, no spaces, UTF-8, like ``broker.device_messages``)::

    schema   1 (a reader refuses other versions)
    event    "opened" | "closed" | "rejected"
    fleet, round, time (ISO 8601 UTC)
    opened:   strategy, selected (device names), rounds (planned total)
    closed:   strategy, participants, declined, bytes_received, bytes_down, seconds, metrics {name: number},
              loss, privacy (the ledger row: epsilon, delta, ...) or null, rejected {reason: count}
    rejected: device (or null), reason, detail (at most 200 characters)

Decoding never trusts its input: every violation raises ``WireError`` (reason ``bad_meta`` or
``bad_version``), so a consumer counts it and goes on.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from broker.topics import ROUND_EVENTS
from broker.wire import WireError, parse_json_object

ROUND_EVENT_SCHEMA = 1
MAX_EVENT_BYTES = 256 * 1024
_REQUIRED = {"opened": ("strategy", "selected"),
             "closed": ("strategy", "participants", "declined", "bytes_received", "seconds", "metrics"),
             "rejected": ("reason",)}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null (JSON has neither), tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _clean(value.item())
    return str(value)


def encode_round_event(fleet: str, round_: int, event: str, fields: dict[str, Any]) -> bytes:
    if event not in ROUND_EVENTS:
        raise ValueError(f"round event {event!r}: use one of {ROUND_EVENTS}")
    missing = [f for f in _REQUIRED[event] if f not in fields]
    if missing:
        raise ValueError(f"a {event} round event needs {missing}")
    obj = {**_clean(fields), "schema": ROUND_EVENT_SCHEMA, "event": event, "fleet": fleet, "round": int(round_),
           "time": fields.get("time") or _now()}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode_round_event(data: bytes) -> dict[str, Any]:
    """The event as a dict; ``WireError`` for anything malformed, oversized or of another version."""
    if len(data) > MAX_EVENT_BYTES:
        raise WireError("oversized", f"round event of {len(data)} bytes; at most {MAX_EVENT_BYTES}")
    obj = parse_json_object(bytes(data), "round event")
    if obj.get("schema") != ROUND_EVENT_SCHEMA:
        raise WireError("bad_version", f"round event schema {obj.get('schema')!r}; this side reads "
                                       f"{ROUND_EVENT_SCHEMA}")
    event = obj.get("event")
    if event not in ROUND_EVENTS:
        raise WireError("bad_meta", f"unknown round event {event!r}")
    if not isinstance(obj.get("round"), int) or isinstance(obj.get("round"), bool) or obj["round"] < 0:
        raise WireError("bad_meta", "round must be a non-negative integer")
    missing = [f for f in _REQUIRED[event] if f not in obj]
    if missing:
        raise WireError("bad_meta", f"{event} event lacks {missing}")
    if event == "closed":
        for key in ("participants", "declined", "bytes_received"):
            if not isinstance(obj[key], int) or obj[key] < 0:
                raise WireError("bad_meta", f"{key} must be a non-negative integer")
        if not isinstance(obj["metrics"], dict) or not all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in obj["metrics"].values()):
            raise WireError("bad_meta", "metrics must map names to numbers")
        if obj.get("privacy") is not None and not isinstance(obj["privacy"], dict):
            raise WireError("bad_meta", "privacy must be an object or null")
    if event == "opened" and not (isinstance(obj["selected"], list) and all(isinstance(d, str) for d in obj["selected"])):
        raise WireError("bad_meta", "selected must be a list of device names")
    if event == "rejected" and not isinstance(obj["reason"], str):
        raise WireError("bad_meta", "reason must be a string")
    return obj
