"""Signed wire messages: who sent it, for which fleet and round, and that nobody changed it since.

A signed message sets flag bit 0 and ends its body with a 64-byte Ed25519 signature over the whole
message before it (header with the CRC field zeroed, body). The header binds fleet, round and device,
so a signed update cannot be replayed into another fleet or round, and a device cannot speak for
another. ``verify_message`` checks and returns the plain message that the ordinary decoders read.
Devices sign their updates with their own key; the aggregator signs the global models.
"""
from __future__ import annotations

import struct
import zlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from broker.wire import FLAG_SIGNED, HEADER, Header, decode_header, frame_message

SIGNATURE_BYTES = 64
_FLAGS_AT, _LEN_AT, _CRC_AT = 17, 20, 24


def sign_message(message: bytes, key: Ed25519PrivateKey) -> bytes:
    decode_header(message)  # a well-formed, unsigned message
    raw = bytearray(message)
    raw[_FLAGS_AT] = FLAG_SIGNED
    struct.pack_into("<I", raw, _LEN_AT, len(message) - HEADER.size + SIGNATURE_BYTES)
    struct.pack_into("<I", raw, _CRC_AT, 0)
    signed = bytes(raw) + key.sign(bytes(raw))
    return signed[:_CRC_AT] + struct.pack("<I", zlib.crc32(signed)) + signed[HEADER.size:]


def is_signed(data: bytes) -> bool:
    return len(data) > _FLAGS_AT and data[_FLAGS_AT] == FLAG_SIGNED


def verify_message(data: bytes, key: Ed25519PublicKey) -> bytes:
    """The plain message inside a signed one; ``WireError`` "unsigned" or "bad_signature" otherwise."""
    return frame_message(*verify_split(data, key))


def verify_split(data: bytes, key: Ed25519PublicKey) -> tuple[Header, bytes]:
    """The header and the plain body of a signed message, checked as ``verify_message`` does, for a decoder
    that reads the body directly (re-framing it only to decode the header again costs two CRCs and copies)."""
    from broker.wire import WireError

    if not is_signed(data):
        raise WireError("unsigned", "this receiver accepts only signed messages")
    header, body = decode_header(data, allow_signed=True)  # length and CRC
    if len(body) < SIGNATURE_BYTES:
        raise WireError("truncated", "signed message shorter than its signature")
    raw = bytearray(data[:-SIGNATURE_BYTES])
    struct.pack_into("<I", raw, _CRC_AT, 0)
    try:
        key.verify(bytes(data[-SIGNATURE_BYTES:]), bytes(raw))
    except InvalidSignature:
        raise WireError("bad_signature", f"signature of device {header.device_id} does not verify") from None
    return header, body[:-SIGNATURE_BYTES]
