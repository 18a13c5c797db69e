"""A patient's consent record: may their device train with the fleet, may their alerts carry an ECG strip.

The fleet server stores the record and publishes it retained on ``pw/{fleet}/consent/{patient}``, so a
device that comes online later still learns it. The record is canonical JSON; when the fleet has a
signing key the message carries an Ed25519 signature over those bytes and a device that holds the
fleet's public key accepts only signed records (a forged "share my strip" must not work). Without a
record nothing is shared: the default is no consent.

    {"record": {"schema": 1, "fleet": ..., "patient": ..., "training": bool, "strip": bool,
                "version": int (grows with every change), "updated": ISO 8601}, "signature": hex | null}
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.topics import NAME_PATTERN
from broker.wire import WireError, parse_json_object

CONSENT_SCHEMA = 1


@dataclass(frozen=True)
class Consent:
    fleet: str
    patient: str
    training: bool = False
    strip: bool = False
    version: int = 1
    updated: str = ""

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.patient):
            raise ValueError(f"patient pseudonym {self.patient!r}: use 1-64 letters, digits, '_', '.', '-'")
        if self.version < 1:
            raise ValueError("consent version starts at 1")

    def record(self) -> dict[str, Any]:
        return {"schema": CONSENT_SCHEMA, "fleet": self.fleet, "patient": self.patient, "training": self.training,
                "strip": self.strip, "version": self.version, "updated": self.updated}


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode_consent(consent: Consent, key: Ed25519PrivateKey | None = None) -> bytes:
    record = consent.record()
    signature = key.sign(_canonical(record)).hex() if key is not None else None
    return _canonical({"record": record, "signature": signature})


def decode_consent(data: bytes, public_key: Ed25519PublicKey | None = None) -> Consent:
    """The record; with ``public_key`` only a correctly signed one. ``WireError`` otherwise."""
    outer = parse_json_object(bytes(data), "consent")
    record = outer.get("record")
    if not isinstance(record, dict):
        raise WireError("bad_meta", "consent lacks its record")
    if record.get("schema") != CONSENT_SCHEMA:
        raise WireError("bad_version", f"consent schema {record.get('schema')!r}; this side reads {CONSENT_SCHEMA}")
    if public_key is not None:
        signature = outer.get("signature")
        if not isinstance(signature, str):
            raise WireError("unsigned", "this device accepts only signed consent records")
        try:
            public_key.verify(bytes.fromhex(signature), _canonical(record))
        except (ValueError, InvalidSignature):
            raise WireError("bad_signature", "consent signature does not match the fleet's key") from None
    try:
        if not all(isinstance(record.get(k), bool) for k in ("training", "strip")):
            raise ValueError("training and strip must be true or false")
        if not isinstance(record.get("version"), int):
            raise ValueError("version must be an integer")
        return Consent(str(record["fleet"]), str(record["patient"]), record["training"], record["strip"],
                       record["version"], str(record.get("updated", "")))
    except (KeyError, ValueError) as exc:
        raise WireError("bad_meta", f"consent record invalid: {exc}") from None
