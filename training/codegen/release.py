"""Signed firmware releases for boards whose model is compiled in (firmware/core/pw_update.h): a new model
means a new image, delivered in CHUNK messages small enough for a microcontroller's MQTT buffer.

Payload: signed head ("PWFW", u32 fleet id, u32 version, u32 image length, SHA-256 of the image; 48 bytes,
little-endian), its Ed25519 signature (64 bytes, the aggregator's release key as for model releases), the
image. The board checks fleet, version and signature before it writes a byte, and the digest at the end."""
from __future__ import annotations

import hashlib
import struct

from broker.fed_messages import fleet_id
from broker.wire import CHUNK_HEADER, HEADER, Header, Kind, frame_message

SIGNED_HEAD = struct.Struct("<4sIII32s")


def firmware_payload(image: bytes, private_key, fleet: str, version: int) -> bytes:
    """``private_key``: an Ed25519PrivateKey (broker.model_release.load_private_key)."""
    if not image:
        raise ValueError("empty firmware image")
    head = SIGNED_HEAD.pack(b"PWFW", fleet_id(fleet), version, len(image), hashlib.sha256(image).digest())
    return head + private_key.sign(head) + image


def firmware_chunks(payload: bytes, fleet: str, version: int, message_id: int, chunk_size: int = 1024) -> list[bytes]:
    """CHUNK frames of at most ``chunk_size`` bytes whose fragments, in index order, are ``payload``."""
    room = chunk_size - HEADER.size - CHUNK_HEADER.size
    if room < 1:
        raise ValueError(f"chunk_size {chunk_size} leaves no room for data")
    pieces = [payload[i:i + room] for i in range(0, len(payload), room)]
    if len(pieces) > 0xFFFF:
        raise ValueError(f"{len(pieces)} chunks exceed the u16 count; raise chunk_size")
    header = Header(Kind.CHUNK, fleet_id(fleet), version, 0)
    return [frame_message(header, CHUNK_HEADER.pack(message_id, i, len(pieces)) + p) for i, p in enumerate(pieces)]
