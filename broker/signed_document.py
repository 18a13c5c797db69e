"""Small signed JSON documents: rollback pins and clinician labels.

Layout: ``b"PWDOC1"``, u16 kind length, kind (ASCII), canonical JSON body, 64-byte Ed25519 signature over
everything before it. The kind is inside the signature, so a label document can never be replayed as a
pin (or the reverse), and the body names its fleet (and device) so it cannot be replayed elsewhere.
"""
from __future__ import annotations

import json
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.wire import WireError

MAGIC = b"PWDOC1"
SIGNATURE_BYTES = 64
MAX_DOCUMENT_BYTES = 256 * 1024


def sign_document(kind: str, body: dict, key: Ed25519PrivateKey) -> bytes:
    tag = kind.encode("ascii")
    data = MAGIC + struct.pack("<H", len(tag)) + tag + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return data + key.sign(data)


def verify_document(data: bytes, kind: str, key: Ed25519PublicKey) -> dict:
    """The body of a ``kind`` document signed by ``key``; ``WireError`` (with a reason code) otherwise."""
    _check_layout(data)
    body, signature = data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]
    try:
        key.verify(signature, body)
    except InvalidSignature:
        raise WireError("bad_signature", f"the {kind} document is not signed by the expected key") from None
    return read_unverified(data, kind)


def read_unverified(data: bytes, kind: str) -> dict:
    """The body of a ``kind`` document WITHOUT checking its signature: only for display by a reader that holds
    no key (the fleet server without ``--pubkey`` shows what it saw as "unverified"); never act on it."""
    _check_layout(data)
    body = data[:-SIGNATURE_BYTES]
    (tag_len,) = struct.unpack_from("<H", body, len(MAGIC))
    start = len(MAGIC) + 2
    if body[start:start + tag_len] != kind.encode("ascii"):
        raise WireError("wrong_kind", f"expected a {kind} document")
    try:
        parsed = json.loads(body[start + tag_len:])
    except ValueError as exc:
        raise WireError("corrupt", f"document body unreadable ({exc})") from None
    if not isinstance(parsed, dict):
        raise WireError("corrupt", "document body is not an object")
    return parsed


def _check_layout(data: bytes) -> None:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise WireError("oversized", f"{len(data)} bytes; a signed document is at most {MAX_DOCUMENT_BYTES}")
    if len(data) < len(MAGIC) + 2 + SIGNATURE_BYTES or not data.startswith(MAGIC):
        raise WireError("corrupt", "not a pulsewire signed document")
