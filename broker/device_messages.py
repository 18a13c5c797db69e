"""ALERT and STATUS messages: a JSON object framed by the wire header (kind, fleet, device, CRC).

The JSON is written canonically (sorted keys, no spaces, UTF-8; integers only, identifiers that need no
escaping), so a microcontroller that emits the same fields produces the same bytes, checked against
golden vectors (``firmware/core/pw_wire.c`` does). The header binds a message to
its fleet and device; the CRC catches corruption that JSON parsing alone would let through.

Alert schema, version 1 (``"schema": 1``):

    alert_id      "<device>-<boot>-<seq>": unique; a redelivered alert carries the same id
    device        device name (topic name)
    patient       pseudonym of the wearer (never a name)
    kind          "ventricular_run" | "supraventricular_run" | "summary" | "anomaly" (autoencoder task)
                  | "af_onset" | "af_offset" (AF: "class" "AF", time = estimated onset; af_offset adds
                  ``af_duration_s``, an integer) | "prolonged_inactivity" (activity task, IMU: no walking for
                  the device's limit; "class" the posture seen last, adds ``inactive_s`` and ``window_index``)
    time          ISO 8601 UTC of the first beat concerned
    beat_index    sample index of that beat in the device's stream
    beats         beats concerned (run length, or beats in the summary window)
    class         AAMI class of the event ("V", "S"; "N" for a summary)
    confidence_permille  mean classifier probability of the event's beats, x 1000, integer
    heart_rate_bpm  mean over the event's beats, rounded to an integer
    counts        summary only: beats per AAMI class in the window
    model_version version of the model that classified the beats

An IMU alert (``prolonged_inactivity``) fills the same required fields so that every consumer reads one
shape: ``time`` and ``beat_index`` are the first still sample (time and index in the IMU stream), ``beats`` the
classified windows of the still stretch, ``class`` an activity name, ``heart_rate_bpm`` 0 (no ECG: not
measured), and it never carries a ``strip`` (optional; only ECG devices attach one).

Optional in version 1 (absent from alerts without it, so their bytes, and the firmware's golden vectors,
are unchanged): ``strip``, a short ECG strip around the event, sent only when the fleet policy and the
patient's consent allow (``broker.consent``)::

    strip {"fs_hz": int, "gain": int (units per mV), "start": sample index of samples[0],
           "samples": [int16, ...] (at most MAX_STRIP_SAMPLES), "beats": [[offset into samples, "N"|"S"|"V"|"F"|"Q"], ...]}

Status (retained on the device's status topic, last will ``{"state": "offline"}``): ``state``,
``capabilities``, and counters such as ``beats_per_s``, ``inference_ms_p50``, ``spool_depth``. Signal
quality (edge devices, optional: a consumer must accept a status without them): ``lead_off_s`` and
``poor_signal_s`` (whole seconds of flat / lead-off signal, and of beats too poor to classify, since
start), ``invalid_samples`` (NaN or flagged samples replaced), ``unusable_beats`` (beats labelled Q).
AF monitoring (devices running the ``af`` task, optional): ``af_state`` (1 inside a confirmed AF episode),
``af_episodes``, ``af_seconds`` (AF time since start), ``af_burden_permille_hour`` (AF share of the current hour
of analysed signal, per mille) and ``af_window_restarts``.
Activity (devices running the ``har`` task, optional): ``activity_seconds`` (whole seconds per activity name),
``activity_current``, ``activity_bouts``, ``activity_windows``, ``activity_unusable_windows``, ``imu_samples``,
``invalid_samples`` and ``inactivity_alerts``.
"""
from __future__ import annotations

import json
from typing import Any

from broker.fed_messages import fleet_id
from broker.wire import Header, Kind, WireError, decode_header, frame_message, parse_json_object

ALERT_SCHEMA = 1
ALERT_KINDS = ("ventricular_run", "supraventricular_run", "summary", "anomaly", "af_onset", "af_offset",
               "prolonged_inactivity")
MAX_STRIP_SAMPLES = 4096
STRIP_LABELS = ("N", "S", "V", "F", "Q")
_REQUIRED_ALERT_FIELDS = ("alert_id", "device", "patient", "kind", "time", "beat_index", "beats", "class",
                          "confidence_permille", "heart_rate_bpm", "model_version", "schema")


def canonical_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_json_message(kind: Kind, fleet: str, device_id: int, obj: dict[str, Any]) -> bytes:
    if kind not in (Kind.ALERT, Kind.STATUS):
        raise ValueError(f"{kind!r} is not a JSON message kind")
    return frame_message(Header(kind, fleet_id(fleet), 0, device_id), canonical_json(obj))


def decode_json_message(data: bytes, kind: Kind) -> tuple[Header, dict[str, Any]]:
    header, body = decode_header(data)
    if header.kind != kind:
        raise WireError("bad_kind", f"expected {kind.name}, got {header.kind.name}")
    return header, parse_json_object(body, f"{kind.name} body")


def encode_alert(fleet: str, device_id: int, alert: dict[str, Any]) -> bytes:
    missing = [f for f in _REQUIRED_ALERT_FIELDS if f not in alert]
    if missing or alert.get("kind") not in ALERT_KINDS:
        raise ValueError(f"alert lacks {missing} or has an unknown kind {alert.get('kind')!r}")
    if "strip" in alert:
        try:
            check_strip(alert["strip"])
        except WireError as exc:
            raise ValueError(str(exc)) from None
    return encode_json_message(Kind.ALERT, fleet, device_id, alert)


def decode_alert(data: bytes) -> tuple[Header, dict[str, Any]]:
    header, alert = decode_json_message(data, Kind.ALERT)
    missing = [f for f in _REQUIRED_ALERT_FIELDS if f not in alert]
    if missing:
        raise WireError("bad_meta", f"alert lacks {missing}")
    if alert["schema"] != ALERT_SCHEMA:
        raise WireError("bad_version", f"alert schema {alert['schema']}; this side reads {ALERT_SCHEMA}")
    if "strip" in alert:
        check_strip(alert["strip"])
    return header, alert


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_strip(strip: Any) -> None:
    """``WireError("bad_strip")`` unless ``strip`` is a well-formed event strip (layout in the module doc)."""
    if not isinstance(strip, dict) or set(strip) != {"fs_hz", "gain", "start", "samples", "beats"}:
        raise WireError("bad_strip", "strip must hold exactly fs_hz, gain, start, samples and beats")
    if not all(_is_int(strip[k]) and strip[k] > 0 for k in ("fs_hz", "gain")) or not _is_int(strip["start"]):
        raise WireError("bad_strip", "fs_hz and gain must be positive integers, start an integer")
    samples, beats = strip["samples"], strip["beats"]
    if not isinstance(samples, list) or not 0 < len(samples) <= MAX_STRIP_SAMPLES or \
            not all(_is_int(v) and -32768 <= v <= 32767 for v in samples):
        raise WireError("bad_strip", f"samples must be 1-{MAX_STRIP_SAMPLES} int16 values")
    if not isinstance(beats, list) or not all(
            isinstance(b, list) and len(b) == 2 and _is_int(b[0]) and 0 <= b[0] < len(samples)
            and b[1] in STRIP_LABELS for b in beats):
        raise WireError("bad_strip", "beats must be [offset inside the strip, AAMI label] pairs")


def encode_status(fleet: str, device_id: int, status: dict[str, Any]) -> bytes:
    if "state" not in status:
        raise ValueError("a status needs a 'state'")
    return encode_json_message(Kind.STATUS, fleet, device_id, status)


def decode_status(data: bytes) -> tuple[Header, dict[str, Any]]:
    header, status = decode_json_message(data, Kind.STATUS)
    if "state" not in status:
        raise WireError("bad_meta", "status lacks 'state'")
    return header, status
