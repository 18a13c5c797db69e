"""The MQTT topic tree: built and parsed in one place so no module formats topic strings by hand.

    pw/{fleet}/global/{round}            aggregator -> devices: global model + round config (MODEL)
    pw/{fleet}/update/{round}/{device}   device -> aggregator: weight delta (UPDATE, maybe CHUNKed)
    pw/{fleet}/device/{device}/status    device heartbeat, retained; the last will says "offline"
    pw/{fleet}/alert/{device}            device -> anyone: arrhythmia alerts (ALERT)
    pw/{fleet}/release                   aggregator -> devices: signed int8 model release, retained
    pw/{fleet}/secagg/{round}            aggregator -> devices: secure-aggregation broadcasts (SECAGG)
    pw/{fleet}/secagg/{round}/{device}   aggregator -> one device: the key shares routed to it (SECAGG)
    pw/{fleet}/firmware                  aggregator -> boards: signed firmware image in CHUNK messages
    pw/{fleet}/pin                       aggregator -> devices: signed rollback (pin + revocations), retained
    pw/{fleet}/label/{device}            clinician -> one device: signed beat labels of an alert, retained
    pw/{fleet}/round/{round}/{event}     aggregator -> server: "opened", "closed", "rejected" (broker.round_events)
    pw/{fleet}/consent/{patient}         server -> devices: a patient's consent record, retained (broker.consent)

A device's secure-aggregation steps go up on its update topic as SECAGG messages (broker.secagg_messages).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

ROOT = "pw"
#: Fleet, device and pseudonym names: no MQTT wildcards or '/', nothing JSON would have to escape.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _check(kind: str, value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(f"{kind} {value!r} must be 1-64 characters of letters, digits, '_', '.', '-' "
                         "(MQTT wildcards and '/' would break the topic tree)")
    return value


@dataclass(frozen=True)
class TopicMatch:
    """What a received topic addresses; fields that do not apply are None."""

    kind: str  # "global", "update", "status", "alert", "release", "secagg", "firmware", "pin", "label", "round"
    #            or "consent"
    fleet: str
    round: int | None = None
    device: str | None = None
    #: "round": the event name; "consent": the patient pseudonym.
    name: str | None = None


#: Round events the aggregator publishes for the fleet server.
ROUND_EVENTS = ("opened", "closed", "rejected")


@dataclass(frozen=True)
class FleetTopics:
    fleet: str

    def __post_init__(self) -> None:
        _check("fleet", self.fleet)

    def global_model(self, round_: int) -> str:
        return f"{ROOT}/{self.fleet}/global/{int(round_)}"

    def update(self, round_: int, device: str) -> str:
        return f"{ROOT}/{self.fleet}/update/{int(round_)}/{_check('device', device)}"

    def status(self, device: str) -> str:
        return f"{ROOT}/{self.fleet}/device/{_check('device', device)}/status"

    def alert(self, device: str) -> str:
        return f"{ROOT}/{self.fleet}/alert/{_check('device', device)}"

    def release(self) -> str:
        return f"{ROOT}/{self.fleet}/release"

    def secagg(self, round_: int, device: str | None = None) -> str:
        """The round's secure-aggregation broadcast topic, or the one addressed to ``device``."""
        base = f"{ROOT}/{self.fleet}/secagg/{int(round_)}"
        return base if device is None else f"{base}/{_check('device', device)}"

    def firmware(self) -> str:
        return f"{ROOT}/{self.fleet}/firmware"

    def pin(self) -> str:
        """The signed rollback document: the version to run and the versions never to install again."""
        return f"{ROOT}/{self.fleet}/pin"

    def label(self, device: str) -> str:
        """Clinician labels for one device only (the broker's ACL lets no other device read them)."""
        return f"{ROOT}/{self.fleet}/label/{_check('device', device)}"

    def round_event(self, round_: int, event: str) -> str:
        if event not in ROUND_EVENTS:
            raise ValueError(f"round event {event!r}: use one of {ROUND_EVENTS}")
        return f"{ROOT}/{self.fleet}/round/{int(round_)}/{event}"

    def consent(self, patient: str) -> str:
        return f"{ROOT}/{self.fleet}/consent/{_check('patient', patient)}"

    # Subscriptions (MQTT wildcards)
    def all_globals(self) -> str:
        return f"{ROOT}/{self.fleet}/global/+"

    def all_updates(self) -> str:
        return f"{ROOT}/{self.fleet}/update/+/+"

    def all_statuses(self) -> str:
        return f"{ROOT}/{self.fleet}/device/+/status"

    def all_alerts(self) -> str:
        return f"{ROOT}/{self.fleet}/alert/+"

    def all_round_events(self) -> str:
        return f"{ROOT}/{self.fleet}/round/+/+"

    def all_consents(self) -> str:
        return f"{ROOT}/{self.fleet}/consent/+"

    def secagg_for(self, device: str) -> list[str]:
        """What a device subscribes to for secure aggregation: the broadcasts and its own messages."""
        return [f"{ROOT}/{self.fleet}/secagg/+", f"{ROOT}/{self.fleet}/secagg/+/{_check('device', device)}"]


def any_fleet_subscriptions() -> list[str]:
    """What the fleet server subscribes to when it listens to every fleet on the broker (one federation per
    seed has its own fleet name): statuses, alerts, releases, rollback pins and round events of ``pw/+/...``."""
    return [f"{ROOT}/+/device/+/status", f"{ROOT}/+/alert/+", f"{ROOT}/+/release", f"{ROOT}/+/pin",
            f"{ROOT}/+/round/+/+"]


def parse_topic(topic: str) -> TopicMatch:
    """The inverse of ``FleetTopics``; ValueError for anything outside the tree."""
    parts = topic.split("/")
    try:
        if parts[0] != ROOT or len(parts) < 3:
            raise ValueError
        fleet, kind = _check("fleet", parts[1]), parts[2]
        if kind == "global" and len(parts) == 4:
            return TopicMatch("global", fleet, round=_round(parts[3]))
        if kind == "update" and len(parts) == 5:
            return TopicMatch("update", fleet, round=_round(parts[3]), device=_check("device", parts[4]))
        if kind == "device" and len(parts) == 5 and parts[4] == "status":
            return TopicMatch("status", fleet, device=_check("device", parts[3]))
        if kind in ("release", "firmware", "pin") and len(parts) == 3:
            return TopicMatch(kind, fleet)
        if kind == "label" and len(parts) == 4:
            return TopicMatch("label", fleet, device=_check("device", parts[3]))
        if kind == "secagg" and len(parts) in (4, 5):
            return TopicMatch("secagg", fleet, round=_round(parts[3]),
                              device=_check("device", parts[4]) if len(parts) == 5 else None)
        if kind == "round" and len(parts) == 5 and parts[4] in ROUND_EVENTS:
            return TopicMatch("round", fleet, round=_round(parts[3]), name=parts[4])
        if kind == "consent" and len(parts) == 4:
            return TopicMatch("consent", fleet, name=_check("patient", parts[3]))
        if kind == "alert" and len(parts) == 4:
            return TopicMatch("alert", fleet, device=_check("device", parts[3]))
    except ValueError:
        pass
    raise ValueError(f"topic {topic!r} is not in the pulsewire tree ({ROOT}/<fleet>/...)")


def _round(text: str) -> int:
    if not text.isdigit() or len(text) > 10:
        raise ValueError
    return int(text)
