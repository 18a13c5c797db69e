"""Clinician labels for the beats of one alert, signed, for one device only.

A clinician confirms or corrects what a device classified; the device retrains its head on them. The
document names fleet, device and alert and is signed with the clinic's label key, so a device takes
labels only from the clinic and only those meant for it (the broker's ACL also keeps other devices
from reading them: ``pw/{fleet}/label/{device}``). Beats are named by their sample index in the
device's own numbering, as in its alerts and beat CSV.
"""
from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.signed_document import sign_document, verify_document
from broker.wire import WireError

KIND = "labels"
MAX_BEATS = 10_000


@dataclass(frozen=True)
class BeatLabels:
    fleet: str
    device: str
    alert_id: str
    beats: tuple[int, ...]
    labels: tuple[str, ...]
    #: Grows with every document the clinic sends (time in ms): a replayed older one changes nothing.
    sequence: int

    def __post_init__(self) -> None:
        if not self.beats or len(self.beats) != len(self.labels):
            raise ValueError(f"{len(self.beats)} beats and {len(self.labels)} labels: give one label per beat")
        if len(self.beats) > MAX_BEATS:
            raise ValueError(f"at most {MAX_BEATS} labelled beats per document")
        if any(b < 0 for b in self.beats) or not all(isinstance(x, str) and 0 < len(x) <= 8 for x in self.labels):
            raise ValueError("beats are sample indices >= 0 and labels short class names (N, S, V, F, Q)")
        if not 0 < len(self.alert_id) <= 128:
            raise ValueError("alert_id must be 1-128 characters")


def sign_labels(doc: BeatLabels, key: Ed25519PrivateKey) -> bytes:
    return sign_document(KIND, {"fleet": doc.fleet, "device": doc.device, "alert_id": doc.alert_id,
                                "beats": list(doc.beats), "labels": list(doc.labels), "sequence": doc.sequence}, key)


def verify_labels(data: bytes, key: Ed25519PublicKey, fleet: str, device: str) -> BeatLabels:
    """The labels if signed by the clinic and addressed to ``device`` of ``fleet``; WireError otherwise."""
    body = verify_document(data, KIND, key)
    try:
        doc = BeatLabels(str(body["fleet"]), str(body["device"]), str(body["alert_id"]),
                         tuple(int(b) for b in body["beats"]), tuple(str(x) for x in body["labels"]),
                         int(body["sequence"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError("corrupt", f"labels unreadable ({exc})") from None
    if (doc.fleet, doc.device) != (fleet, device):
        raise WireError("wrong_device", f"labels for {doc.fleet}/{doc.device}, this is {fleet}/{device}")
    return doc
