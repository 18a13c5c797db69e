"""The bus contract the server adds: round events, consent records, the optional event strip of an alert."""
from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.consent import Consent, decode_consent, encode_consent
from broker.device_messages import decode_alert, encode_alert
from broker.round_events import decode_round_event, encode_round_event
from broker.topics import FleetTopics, parse_topic
from broker.wire import WireError
from edge_runtime.event_strip import StripPolicy, StripRecorder
from edge_runtime.runtime import BeatResult

ALERT = {"alert_id": "d1-b-1", "device": "d1", "patient": "pt1", "kind": "ventricular_run",
         "time": "2026-11-26T08:00:00.000+00:00", "beat_index": 900, "beats": 3, "class": "V",
         "confidence_permille": 912, "heart_rate_bpm": 141, "model_version": "m1", "schema": 1}


def test_round_event_topics_parse_back():
    t = FleetTopics("ward")
    assert parse_topic(t.round_event(7, "closed")).name == "closed"
    assert parse_topic(t.round_event(7, "closed")).round == 7
    assert parse_topic(t.consent("pt1")).kind == "consent"
    with pytest.raises(ValueError):
        t.round_event(1, "deleted")
    with pytest.raises(ValueError):
        parse_topic("pw/ward/round/1/deleted")


def test_round_event_round_trip_turns_nan_into_null():
    data = encode_round_event("ward", 3, "closed", {"strategy": "fedavg", "participants": 4, "declined": 1,
                                                    "bytes_received": 1000, "seconds": 2.5,
                                                    "metrics": {"val_macro_f1": 0.61, "test_loss": float("nan")}})
    event = decode_round_event(data)
    assert event["round"] == 3 and event["metrics"] == {"val_macro_f1": 0.61, "test_loss": None}


@pytest.mark.parametrize("payload, reason", [
    (b"not json", "bad_meta"), (b"[]", "bad_meta"),
    (b'{"schema":2,"event":"opened","round":1,"fleet":"f","strategy":"x","selected":[]}', "bad_version"),
    (b'{"schema":1,"event":"exploded","round":1,"fleet":"f"}', "bad_meta"),
    (b'{"schema":1,"event":"closed","round":1,"fleet":"f","strategy":"x","participants":-1,"declined":0,'
     b'"bytes_received":0,"seconds":1,"metrics":{}}', "bad_meta"),
    (b'{"schema":1,"event":"closed","round":1,"fleet":"f","strategy":"x","participants":1,"declined":0,'
     b'"bytes_received":0,"seconds":1,"metrics":{"f1":"high"}}', "bad_meta"),
    (b'{"schema":1,"event":"opened","round":true,"fleet":"f","strategy":"x","selected":[]}', "bad_meta"),
])
def test_malformed_round_events_raise_wire_errors(payload, reason):
    with pytest.raises(WireError) as err:
        decode_round_event(payload)
    assert err.value.reason == reason


def test_consent_signed_verifies_and_forgery_is_refused():
    key = Ed25519PrivateKey.generate()
    data = encode_consent(Consent("ward", "pt1", training=True, strip=True, version=2), key)
    got = decode_consent(data, key.public_key())
    assert (got.strip, got.training, got.version) == (True, True, 2)
    forged = data.replace(b'"strip":true', b'"strip":false')
    with pytest.raises(WireError) as err:
        decode_consent(forged, key.public_key())
    assert err.value.reason == "bad_signature"
    with pytest.raises(WireError) as err:
        decode_consent(encode_consent(Consent("ward", "pt1", strip=True)), key.public_key())
    assert err.value.reason == "unsigned"


def test_alert_with_strip_round_trips_and_alert_without_is_unchanged():
    plain = encode_alert("ward", 1, ALERT)
    assert b"strip" not in plain  # the firmware's golden bytes stay as they were
    strip = {"fs_hz": 360, "gain": 1000, "start": 400, "samples": [0, 120, -80, 32767], "beats": [[1, "V"]]}
    _, alert = decode_alert(encode_alert("ward", 1, {**ALERT, "strip": strip}))
    assert alert["strip"] == strip


@pytest.mark.parametrize("strip", [
    {"fs_hz": 360, "gain": 1000, "start": 0, "samples": [40000], "beats": []},  # not int16
    {"fs_hz": 360, "gain": 1000, "start": 0, "samples": [1, 2], "beats": [[5, "V"]]},  # beat outside
    {"fs_hz": 360, "gain": 1000, "start": 0, "samples": [1, 2], "beats": [[0, "<b>"]]},  # unknown label
    {"fs_hz": 0, "gain": 1000, "start": 0, "samples": [1], "beats": []},
    {"fs_hz": 360, "gain": 1000, "start": 0, "samples": [], "beats": []},
    {"fs_hz": 360, "gain": 1000, "start": 0, "samples": [1], "beats": [], "script": 1},
    "strip",
])
def test_malformed_strips_are_refused_by_the_decoder(strip):
    from broker.wire import Kind
    from broker.device_messages import encode_json_message

    data = encode_json_message(Kind.ALERT, "ward", 1, {**ALERT, "strip": strip})
    with pytest.raises(WireError) as err:
        decode_alert(data)
    assert err.value.reason == "bad_strip"


def test_strip_recorder_cuts_the_window_around_the_event_with_its_labels():
    fs = 360.0
    rec = StripRecorder(fs, StripPolicy(before_s=1.0, max_s=3.0, gain=1000))
    signal = np.sin(np.arange(3600) / 20.0)  # 10 s, amplitude 1 mV
    list(rec.tap(np.array_split(signal, 10)))
    for sample, label in ((2000, "N"), (2300, "V"), (2550, "V"), (2800, "V"), (3500, "N")):
        rec.on_beat(BeatResult(sample, sample / fs, label, 0.9, 70.0, "m"))
    strip = rec.strip(2300)
    assert strip["start"] == 2300 - 360 and len(strip["samples"]) == 3 * 360
    assert strip["beats"] == [[2000 - 1940, "N"], [360, "V"], [610, "V"], [860, "V"]]
    assert strip["samples"][360] == int(round(1000 * np.sin(2300 / 20.0)))
