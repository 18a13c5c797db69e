"""A signed rollback: which model version a fleet runs, and which versions it must never install again.

Moving a device's pointer back is not enough: the retained release on ``pw/{fleet}/release`` is
delivered again on every reconnect and would be reinstalled. The pin travels retained on its own topic
(``pw/{fleet}/pin``), signed with the fleet's signing key (the one that signs releases); devices keep
the revocations on disk, so a revoked release stays refused after a restart too. ``sequence`` only
grows (the CLI uses the time in milliseconds): an older pin replayed later changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.model_release import ReleaseError
from broker.signed_document import read_unverified, sign_document, verify_document
from broker.wire import WireError

KIND = "pin"


@dataclass(frozen=True)
class Pin:
    fleet: str
    #: The version devices go back to (they keep earlier versions installed on disk).
    version: int
    #: Versions refused from now on, even when a signed release of them is delivered again.
    revoked: tuple[int, ...]
    sequence: int

    def __post_init__(self) -> None:
        if self.version < 1 or self.sequence < 0 or any(v < 1 for v in self.revoked):
            raise ValueError("versions must be >= 1 and the sequence >= 0")
        if self.version in self.revoked:
            raise ValueError(f"version {self.version} cannot be both pinned and revoked")


def sign_pin(pin: Pin, key: Ed25519PrivateKey) -> bytes:
    return sign_document(KIND, {"fleet": pin.fleet, "version": pin.version, "revoked": sorted(pin.revoked),
                                "sequence": pin.sequence}, key)


def verify_pin(data: bytes, key: Ed25519PublicKey | None) -> Pin:
    """The pin if signed by ``key`` and well formed; ``ReleaseError`` (reason code) otherwise. ``key=None``
    reads it without checking the signature: for display only (the fleet server without a public key)."""
    try:
        body = verify_document(data, KIND, key) if key is not None else read_unverified(data, KIND)
        return Pin(str(body["fleet"]), int(body["version"]), tuple(int(v) for v in body["revoked"]),
                   int(body["sequence"]))
    except WireError as exc:
        raise ReleaseError(exc.reason, str(exc)) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ReleaseError("corrupt", f"pin unreadable ({exc})") from None
