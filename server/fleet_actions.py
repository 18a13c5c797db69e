"""What the dashboard sends to the fleet: a signed rollback pin and a clinician's signed beat labels.

Both reuse the bus contract's encoders (``broker.model_pin.sign_pin``, ``broker.clinician_labels.sign_labels``:
the same bytes `pulsewire release rollback` and `pulsewire label` publish) and are written to the audit log
in the same transaction that decides them. Each needs its key, given explicitly when the server starts
(``--release-signing-key``, ``--labels-key``); without it the action is absent and the page names the CLI
command to run instead.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable

from broker.clinician_labels import BeatLabels, sign_labels
from broker.model_pin import Pin, sign_pin
from broker.topics import FleetTopics
from server.models import Alert
from server.repository import Repository

#: The classes a clinician may give a beat (AAMI; Q: unclassifiable).
BEAT_CLASSES = ("N", "S", "V", "F", "Q")
#: (topic, payload, identity) -> None once the broker acknowledged it; raises ``ActionFailed`` otherwise.
Publisher = Callable[[str, bytes, str], None]


class ActionFailed(Exception):
    """A request the server refuses (HTTP ``status``) with a message that says what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FleetActions:
    fleet: str
    publish: Publisher
    #: The fleet's release signing key (the aggregator's): signs rollback pins. None: no rollback button.
    release_signing_key: Any = None
    #: The clinic's label key: signs beat labels. None: no labelling on the alerts page.
    labels_key: Any = None

    @property
    def can_rollback(self) -> bool:
        return self.release_signing_key is not None

    @property
    def can_label(self) -> bool:
        return self.labels_key is not None

    def rollback(self, repo: Repository, user: str, version: int) -> tuple[dict[str, Any], bytes]:
        """Pin the fleet to ``version``, revoking every newer release seen (and what the current pin revoked):
        the pin is recorded and audited here and returned signed; the caller publishes it once this
        transaction has committed (published first, the server's own ingest could store the retained pin
        before this transaction and make it fail)."""
        if not self.can_rollback:
            raise ActionFailed(409, "this server has no release signing key: run `pulsewire release rollback "
                                    f"--version {version} --fleet {self.fleet} --signing-key aggregator/signing.key`")
        known = {r.version for r in repo.releases() if r.fleet == self.fleet}
        if version not in known:
            raise ActionFailed(422, f"version {version} is not a release of fleet {self.fleet} seen on the bus")
        current = repo.pin(self.fleet)
        revoked = ({v for v in known if v > version} | set(current.revoked if current else ())) - {version}
        if not revoked:
            raise ActionFailed(422, f"no release newer than {version} to revoke: the fleet already runs it")
        sequence = max(int(time.time() * 1000), (current.sequence + 1) if current else 0)
        pin = Pin(self.fleet, version, tuple(sorted(revoked)), sequence)
        signer = hashlib.sha256(self.release_signing_key.public_key().public_bytes_raw()).hexdigest()[:16]
        repo.record_pin(self.fleet, pin.version, list(pin.revoked), pin.sequence, signer)
        repo.audit(user, "rollback", f"fleet {self.fleet}",
                   f"pinned version {pin.version}; revoked {list(pin.revoked)}; sequence {pin.sequence}")
        return ({"fleet": self.fleet, "pinned": pin.version, "revoked": list(pin.revoked), "sequence": pin.sequence},
                sign_pin(pin, self.release_signing_key))

    def publish_pin(self, signed: bytes) -> None:
        """Publish a pin from ``rollback`` (retained, as the aggregator: the ACL lets only it write pins)."""
        self.publish(FleetTopics(self.fleet).pin(), signed, "aggregator")

    def relabel(self, repo: Repository, user: str, alert: Alert, beats: list[int], labels: list[str]) -> dict[str, Any]:
        """Send a clinician's labels of ``alert``'s strip beats (device sample indices) to that device only."""
        if not self.can_label:
            raise ActionFailed(409, "this server has no clinic label key: run `pulsewire label --device "
                                    f"{alert.device} --alert ... --beats ... --labels ...` with --labels-key")
        strip = alert.body.get("strip")
        if not isinstance(strip, dict):
            raise ActionFailed(422, "this alert carries no strip: there are no beats to label")
        device_beats = strip_beats(strip)
        if not beats or len(beats) != len(labels):
            raise ActionFailed(422, f"{len(beats)} beats and {len(labels)} labels: give one label per beat")
        unknown = [b for b in beats if b not in device_beats]
        if unknown:
            raise ActionFailed(422, f"beats {unknown[:5]} are not beats of this alert's strip")
        if len(set(beats)) != len(beats) or any(x not in BEAT_CLASSES for x in labels):
            raise ActionFailed(422, f"each beat once, each label one of {' '.join(BEAT_CLASSES)}")
        doc = BeatLabels(alert.fleet, alert.device, alert.alert_id, tuple(beats), tuple(labels),
                         int(time.time() * 1000))
        self.publish(FleetTopics(alert.fleet).label(alert.device), sign_labels(doc, self.labels_key), "clinic")
        corrected = sum(1 for b, x in zip(beats, labels) if device_beats[b] != x)
        repo.audit(user, "labels", f"alert {alert.alert_id}",
                   f"device {alert.device}: {len(beats)} beats, {corrected} corrected")
        return {"alert_id": alert.alert_id, "device": alert.device, "beats": len(beats), "corrected": corrected}


def strip_beats(strip: dict[str, Any]) -> dict[int, str]:
    """The strip's beats by their sample index in the device's stream (``start`` + offset), as the device
    names them in its labels, with the class the device gave each."""
    return {int(strip["start"]) + int(offset): str(label) for offset, label in strip["beats"]}
