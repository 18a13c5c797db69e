"""A signed model release: what the aggregator publishes and a device installs only if it verifies.

Layout (all integers little-endian)::

    b"PWREL1"  u32 manifest_len  manifest (canonical JSON)  model bytes  metadata bytes  signature (64)

The Ed25519 signature covers every byte before it. The manifest names the fleet, a version that only
grows, the lengths and SHA-256 of the model and its metadata, and the digest of the signal pipeline
the model expects. Published retained on ``pw/{fleet}/release``: a device that comes online later
still gets the latest release.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.wire import WireError

MAGIC = b"PWREL1"
SIGNATURE_BYTES = 64
MAX_RELEASE_BYTES = 4 * 1024 * 1024


class ReleaseError(WireError):
    """A release that must not be installed; ``reason`` is a short code for status and metrics."""


@dataclass(frozen=True)
class Release:
    fleet: str
    version: int
    model: bytes
    metadata: bytes
    signal_digest: str


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sign_release(release: Release, private_key: Ed25519PrivateKey) -> bytes:
    manifest = json.dumps({"fleet": release.fleet, "version": int(release.version),
                           "model_len": len(release.model), "model_sha256": _sha(release.model),
                           "metadata_len": len(release.metadata), "metadata_sha256": _sha(release.metadata),
                           "signal_digest": release.signal_digest}, sort_keys=True, separators=(",", ":")).encode()
    body = MAGIC + struct.pack("<I", len(manifest)) + manifest + release.model + release.metadata
    return body + private_key.sign(body)


def verify_release(data: bytes, public_key: Ed25519PublicKey) -> Release:
    """The release if ``data`` is well formed and signed by ``public_key``; ReleaseError otherwise."""
    if len(data) > MAX_RELEASE_BYTES:
        raise ReleaseError("oversized", f"{len(data)} bytes; a release is at most {MAX_RELEASE_BYTES}")
    if len(data) < len(MAGIC) + 4 + SIGNATURE_BYTES or not data.startswith(MAGIC):
        raise ReleaseError("corrupt", "not a pulsewire model release")
    body, signature = data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]
    try:
        public_key.verify(signature, body)
    except InvalidSignature:
        raise ReleaseError("bad_signature", "the signature does not match the aggregator's key") from None
    (manifest_len,) = struct.unpack_from("<I", body, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        manifest = json.loads(body[start:start + manifest_len])
        model_len, meta_len = int(manifest["model_len"]), int(manifest["metadata_len"])
        fleet, version, digest = str(manifest["fleet"]), int(manifest["version"]), str(manifest["signal_digest"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ReleaseError("corrupt", f"manifest unreadable ({exc})") from exc
    payload = body[start + manifest_len:]
    if len(payload) != model_len + meta_len:
        raise ReleaseError("corrupt", f"{len(payload)} payload bytes, manifest says {model_len + meta_len}")
    model, metadata = payload[:model_len], payload[model_len:]
    if _sha(model) != manifest["model_sha256"] or _sha(metadata) != manifest["metadata_sha256"]:
        raise ReleaseError("corrupt", "model or metadata hash differs from the manifest")
    return Release(fleet, version, model, metadata, digest)


def generate_keys(out_dir: Path) -> tuple[Path, Path]:
    """``aggregator.key`` (private, PEM, mode 600) and ``aggregator.pub`` (public, PEM) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private, public = out_dir / "aggregator.key", out_dir / "aggregator.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key
