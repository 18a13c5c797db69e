"""What an aggregator service is told to do: the fleet, the rounds, and the policy that closes each round.

Frozen dataclasses validated on construction, so a wrong setting fails when the service is configured,
not hours into a run. Imports no TensorFlow and no MQTT.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from broker.fed_messages import UpdateEncoding
from edge_runtime.dp_noise import check_noise_name
from training.federated.selection import POLICIES, SelectionSpec


@dataclass(frozen=True)
class RoundPolicy:
    #: "all", "fraction:F" (a random share each round), "online" (devices whose status is online), or a
    #: status-fed policy ``NAME[:k=N|fraction=F,KEY=VALUE,...]`` (``training.federated.selection``: uniform,
    #: power-aware, reliability-weighted, oort).
    selection: str = "all"
    #: Share of the selected devices whose updates let a round close at its deadline.
    quorum: float = 0.8
    deadline_s: float = 300.0
    #: True: wait for every selected device (or the deadline); False: close as soon as the quorum is in.
    wait_for_all: bool = True
    #: "drop" late updates, or "downweight:W": fold a round-r update into round r+s with weight W**s.
    late: str = "drop"
    max_staleness: int = 1
    #: Drop an update whose L2 norm exceeds this multiple of the round's median norm (a device whose local
    #: training blew up, or an attacker scaling its delta); None disables the check. Needs >= 3 updates.
    max_norm_ratio: float | None = 50.0
    #: Before the first round of a status-fed selection ("online" or a policy), take in the devices' retained
    #: statuses for up to this many seconds (until none arrives for half a second): otherwise round 1 is drawn
    #: from an empty device book and asks devices without consent or battery. 0 disables the wait.
    status_settle_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_norm_ratio is not None and self.max_norm_ratio <= 1:
            raise ValueError("max_norm_ratio must be > 1 (or None)")
        if self.status_settle_s < 0:
            raise ValueError("status_settle_s must be >= 0")
        if not 0 < self.quorum <= 1 or self.deadline_s <= 0 or self.max_staleness < 0:
            raise ValueError("quorum must be in (0, 1], deadline_s > 0 and max_staleness >= 0")
        self.late_weight  # validates the spec
        kind, _, arg = self.selection.partition(":")
        if SelectionSpec.parse(self.selection) is None and not (
                (kind in ("all", "online") and not arg) or (kind == "fraction" and 0 < _float(arg) <= 1)):
            raise ValueError(f"selection {self.selection!r}: use all, online, fraction:F with 0 < F <= 1, or a "
                             f"policy {sorted(POLICIES)}[:k=N|fraction=F,KEY=VALUE,...]")

    @property
    def uses_status(self) -> bool:
        """The selection reads device statuses (so round 1 should wait for the retained ones)."""
        return self.selection == "online" or SelectionSpec.parse(self.selection) is not None

    @property
    def late_weight(self) -> float | None:
        """None when late updates are dropped."""
        if self.late == "drop":
            return None
        kind, _, arg = self.late.partition(":")
        if kind == "downweight" and 0 < _float(arg) <= 1:
            return _float(arg)
        raise ValueError(f"late policy {self.late!r}: use drop or downweight:W with 0 < W <= 1")


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


@dataclass(frozen=True)
class AggregatorConfig:
    fleet: str
    #: Registered devices: topic name -> the u32 id their wire headers must carry.
    devices: dict[str, int]
    rounds: int
    strategy: str = "fedavg"
    strategy_args: dict[str, Any] = field(default_factory=dict)
    policy: RoundPolicy = field(default_factory=RoundPolicy)
    #: Local-training settings sent to devices in the round plan.
    local: dict[str, Any] = field(default_factory=dict)
    encoding: str = "float32"
    chunk_size: int | None = None
    seed: int = 0
    #: Ed25519 public key per device: when given, only updates signed by their device are accepted.
    device_keys: dict[str, Any] | None = None
    #: Told when a round opens and closes and when a message is rejected (``round_events.RoundEventPublisher``:
    #: publishes them for the fleet server); None: nobody is told.
    observer: Any = None
    #: Read the patients' consent records (``pw/{fleet}/consent/+``) and never select a device whose patient
    #: withdrew training consent (``consent_watch.ConsentWatch``).
    honour_consent: bool = True
    #: The fleet's consent public key: when given, only signed consent records count.
    consent_key: Any = None
    #: Where the strategy's DP noise comes from (``edge_runtime.dp_noise``): "secure" (ChaCha20, OS-keyed), or
    #: "seeded" (predictable: reproducible runs only; the service warns and every ledger row records it).
    dp_noise: str = "secure"

    def __post_init__(self) -> None:
        if self.rounds < 1 or not self.devices:
            raise ValueError("at least one round and one registered device are needed")
        UpdateEncoding.parse(self.encoding)
        check_noise_name(self.dp_noise)
