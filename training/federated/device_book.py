"""What the round engine remembers about each device for selection: how often it was chosen and delivered,
its last loss (Oort's statistical utility) and round time, and the fairness of the run so far.

The selection policies (``training.federated.selection``) see a ``DeviceStatus`` per device: the fields of
its last status message (battery, charging, compute class, link and signal quality, consent, online) plus
this history. A malformed status is logged and counted by the caller, and the device is judged on the
defaults instead, so one bad message never stops a round from opening. JSON-able for checkpoints.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any, Sequence

from training.federated.selection import (DeviceStatus, FairnessReport, fairness_of_counts,
                                          reliability_from_counts)
from training.federated.strategies import ClientUpdate

log = logging.getLogger(__name__)


class DeviceBook:
    def __init__(self, devices: Sequence[str]) -> None:
        self.devices = list(devices)
        self.selected: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.utility: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.last_selected: dict[str, int] = {}
        self.rounds = 0

    def chose(self, names: Sequence[str], round_: int) -> None:
        """A round opened with ``names`` selected."""
        self.rounds += 1
        for name in names:
            self.selected[name] += 1
            self.last_selected[name] = round_

    def took(self, update: ClientUpdate, seconds: float | None) -> None:
        """An accepted update: the device delivered; its loss and round time feed Oort."""
        self.delivered[update.device] += 1
        loss = update.meta.get("train_loss")
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            self.utility[update.device] = update.num_examples * abs(float(loss))  # |B| · sqrt(mean loss²) ≈ |B| · loss
        if seconds is not None and seconds > 0:
            self.seconds[update.device] = float(seconds)

    def status_of(self, name: str, status: dict[str, Any] | None) -> DeviceStatus:
        """The policy's view of ``name``; a device that never reported is assumed online with default fields.
        ValueError for a malformed status."""
        history = {"reliability": reliability_from_counts(min(self.delivered[name], self.selected[name]),
                                                          self.selected[name]),
                   "statistical_utility": self.utility.get(name), "round_seconds": self.seconds.get(name),
                   "last_selected_round": self.last_selected.get(name)}
        return DeviceStatus.from_status(name, status or {"state": "online"}, **history)

    def fairness(self) -> FairnessReport:
        return fairness_of_counts({d: self.selected[d] for d in self.devices}, self.rounds)

    def to_json(self) -> dict[str, Any]:
        return {"selected": dict(self.selected), "delivered": dict(self.delivered), "utility": self.utility,
                "seconds": self.seconds, "last_selected": self.last_selected, "rounds": self.rounds}

    def load_json(self, data: dict[str, Any]) -> None:
        self.selected, self.delivered = Counter(data.get("selected", {})), Counter(data.get("delivered", {}))
        self.utility, self.seconds = dict(data.get("utility", {})), dict(data.get("seconds", {}))
        self.last_selected, self.rounds = dict(data.get("last_selected", {})), int(data.get("rounds", 0))
