"""One simulated wearable, without I/O: its battery, links and signal drift; it writes the messages the edge
runtime writes (status, alert, int8 head update) with the encoders of ``broker/`` (no second copy of the
wire format). The status fields are those ``training.federated.selection`` reads to choose devices."""
from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

import numpy as np

from broker.device_messages import ALERT_SCHEMA, encode_alert, encode_status
from broker.fed_messages import fleet_id
from broker.wire import Encoding, Kind, encode_tensors

#: Compute classes and how fast each drains its battery, % per hour while streaming ECG (an nRF52/M4 patch
#: lasts days; a Linux-class A53 gateway a working day).
COMPUTE_CLASSES = {"m4": 1.0, "m7": 2.0, "a53": 8.0}
CHARGE_PCT_PER_H = 40.0
#: Battery a round costs a device: the head step, the model download and the update upload (% of a charge).
ROUND_PCT = 0.05


@dataclass
class SimDevice:
    """Mutable state of one device; ``advance`` moves it forward in (simulated = wall) time."""

    index: int
    name: str
    device_id: int
    patient: str
    compute_class: str
    battery_pct: float
    charging: bool
    link_quality: float  # 0..1: share of packets a link of this quality would deliver at once
    signal_quality: float  # 0..1: share of the ECG usable (electrode contact, motion)
    consent: bool
    slow_link: bool
    boot_id: str
    alerts_made: int = 0
    beat_index: int = 0

    @classmethod
    def create(cls, index: int, seed: int, slow_fraction: float) -> "SimDevice":
        """Device ``index`` of a fleet seeded ``seed``: the same device every time (reproducible benches)."""
        r = random.Random(seed * 1_000_003 + index)
        return cls(index=index, name=f"sim{index:06d}", device_id=index + 1, patient=f"p{index:06d}",
                   compute_class=r.choices(list(COMPUTE_CLASSES), weights=(6, 3, 1))[0],
                   battery_pct=r.uniform(15, 100), charging=r.random() < 0.1,
                   link_quality=r.uniform(0.5, 1.0), signal_quality=r.uniform(0.6, 1.0),
                   consent=r.random() < 0.95, slow_link=r.random() < slow_fraction,
                   boot_id=f"{r.getrandbits(32):08x}")

    def advance(self, seconds: float, r: random.Random) -> None:
        """Battery drains (or charges), the links and the electrode contact take a random step."""
        rate = CHARGE_PCT_PER_H if self.charging else -COMPUTE_CLASSES[self.compute_class]
        self.battery_pct = min(100.0, max(0.0, self.battery_pct + rate * seconds / 3600))
        if self.charging and self.battery_pct >= 99.5:
            self.charging = False
        elif not self.charging and self.battery_pct < 20 and r.random() < 0.2:
            self.charging = True  # the wearer puts it on the charger, sooner or later
        self.link_quality = min(1.0, max(0.05, self.link_quality + r.gauss(0, 0.03)))
        self.signal_quality = min(1.0, max(0.0, self.signal_quality + r.gauss(0, 0.02)))
        self.beat_index += int(seconds * 360 * 75 / 60)  # 75 bpm at 360 Hz

    def spend_round(self) -> None:
        """A round taken part in drains the battery a little more than streaming does."""
        if not self.charging:
            self.battery_pct = max(0.0, self.battery_pct - ROUND_PCT)

    def status(self, state: str = "online") -> dict:
        """The retained status: integers where a microcontroller would send integers (canonical JSON)."""
        return {"state": state, "component": "sim", "compute_class": self.compute_class,
                "battery_pct": int(round(self.battery_pct)), "charging": self.charging,
                "link_quality_permille": int(round(1000 * self.link_quality)),
                "signal_quality_permille": int(round(1000 * self.signal_quality)),
                "consent": self.consent}

    def status_payload(self, fleet: str, state: str = "online", **extra) -> bytes:
        """``extra``: e.g. ``declined_round`` and ``reason``, as ``DeviceClient`` declines a round."""
        return encode_status(fleet, self.device_id, {**self.status(state), **extra})

    def offline_payload(self, fleet: str) -> bytes:
        """The last will: what the broker publishes when the device vanishes without a goodbye."""
        return encode_status(fleet, self.device_id, {"state": "offline"})

    def next_alert(self, r: random.Random, now: dt.datetime) -> dict:
        """An alert with the edge runtime's schema (``broker.device_messages``); ids never repeat."""
        self.alerts_made += 1
        kind = r.choices(("ventricular_run", "supraventricular_run", "summary"), weights=(3, 2, 5))[0]
        cls = {"ventricular_run": "V", "supraventricular_run": "S", "summary": "N"}[kind]
        beats = r.randint(3, 12) if kind != "summary" else r.randint(50, 120)
        alert = {"alert_id": f"{self.name}-{self.boot_id}-{self.alerts_made}", "device": self.name,
                 "patient": self.patient, "kind": kind, "time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                 "beat_index": self.beat_index, "beats": beats, "class": cls,
                 "confidence_permille": r.randint(600, 999), "heart_rate_bpm": r.randint(50, 160),
                 "model_version": "sim-1", "schema": ALERT_SCHEMA}
        if kind == "summary":
            alert["counts"] = {"N": beats - 2, "S": 1, "V": 1}
        return alert

    def alert_payload(self, fleet: str, alert: dict) -> bytes:
        return encode_alert(fleet, self.device_id, alert)

    def update_payload(self, fleet: str, round_: int, shapes: tuple[tuple[int, ...], ...], seed: int) -> bytes:
        """An int8 UPDATE of the given tensor shapes: a random delta of a plausible magnitude (the bytes and
        the timing are what matter here, not the values)."""
        rng = np.random.default_rng([seed, round_, self.index])
        deltas = [rng.normal(0, 0.01, s).astype(np.float32) for s in shapes]
        return encode_tensors(Kind.UPDATE, fleet_id(fleet), round_, self.device_id, deltas, Encoding.INT8,
                              meta={"samples": int(rng.integers(50, 500)), "device": self.name})

    def upload_delay_s(self, size: int, slow_link_bytes_per_s: float) -> float:
        """Seconds a message of ``size`` bytes spends on this device's uplink before the broker sees it."""
        return size / slow_link_bytes_per_s if self.slow_link else 0.0
