"""From classified beats to clinically meaningful alerts: episodes, not one message per beat.

A run of ``run_length`` consecutive V beats (or S beats) of usable signal quality raises one alert at the beat that completes
it, the moment a monitor would sound; the run's continuation does not raise more. Everything else is
counted into a summary every ``summary_every_s`` seconds of signal. Pure logic, no I/O.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

from broker.device_messages import ALERT_SCHEMA
from broker.topics import NAME_PATTERN
from edge_runtime.runtime import BeatResult

_RUN_KINDS = {"V": "ventricular_run", "S": "supraventricular_run"}


@dataclass(frozen=True)
class AlertPolicy:
    run_length: int = 3
    summary_every_s: float = 60.0

    def __post_init__(self) -> None:
        if self.run_length < 2 or self.summary_every_s <= 0:
            raise ValueError("run_length must be >= 2 and summary_every_s > 0")


@dataclass
class _Window:
    start: BeatResult | None = None
    counts: dict[str, int] = field(default_factory=dict)
    hr_sum: float = 0.0
    conf_sum: float = 0.0
    beats: int = 0


class AlertBuilder:
    """Feed beats in order; collect the alerts they complete."""

    def __init__(self, device: str, patient: str, policy: AlertPolicy = AlertPolicy(),
                 stream_start: dt.datetime | None = None, boot_id: str | None = None) -> None:
        for what, value in (("device", device), ("patient pseudonym", patient)):
            if not NAME_PATTERN.match(value):  # no JSON escaping: a microcontroller writes the same bytes
                raise ValueError(f"{what} {value!r}: use 1-64 letters, digits, '_', '.', '-' (no names: a pseudonym)")
        self.device, self.patient, self.policy = device, patient, policy
        self.stream_start = stream_start or dt.datetime.now(dt.timezone.utc)
        self.boot_id = boot_id or uuid.uuid4().hex[:8]
        self._seq = 0
        self._run: list[BeatResult] = []
        self._window = _Window()

    def on_beat(self, beat: BeatResult) -> list[dict]:
        alerts = []
        if self._run and (beat.label != self._run[-1].label or not beat.usable):
            self._run = []
        if beat.label in _RUN_KINDS and beat.usable:  # poor signal (labelled Q anyway) never starts an alert
            self._run.append(beat)
            if len(self._run) == self.policy.run_length:
                alerts.append(self._alert(_RUN_KINDS[beat.label], self._run, beat.label))
        w = self._window
        if w.start is None:
            w.start = beat
        w.counts[beat.label] = w.counts.get(beat.label, 0) + 1
        w.hr_sum += beat.heart_rate_bpm
        w.conf_sum += beat.confidence
        w.beats += 1
        if beat.time_s - w.start.time_s >= self.policy.summary_every_s:
            alerts.append(self._summary())
        return alerts

    def flush(self) -> list[dict]:
        return [self._summary()] if self._window.beats else []

    def event(self, kind: str, beats: list[BeatResult], label: str) -> dict:
        """An alert of ``kind`` for ``beats`` found by another detector (e.g. the anomaly monitor's stretches)."""
        return self._alert(kind, beats, label)

    def _summary(self) -> dict:
        w = self._window
        alert = self._base("summary", w.start, w.beats, "N", w.conf_sum / w.beats, w.hr_sum / w.beats)
        alert["counts"] = dict(sorted(w.counts.items()))
        self._window = _Window()
        return alert

    def event_at(self, kind: str, first: BeatResult, n: int, label: str, confidence: float, hr: float) -> dict:
        """An alert of another component (e.g. ``af_monitor``'s AF onset) numbered in this device's sequence."""
        return self._base(kind, first, n, label, confidence, hr)

    def _alert(self, kind: str, beats: list[BeatResult], label: str) -> dict:
        n = len(beats)
        return self._base(kind, beats[0], n, label, sum(b.confidence for b in beats) / n,
                          sum(b.heart_rate_bpm for b in beats) / n)

    def _base(self, kind: str, first: BeatResult, n: int, label: str, confidence: float, hr: float) -> dict:
        self._seq += 1
        when = self.stream_start + dt.timedelta(seconds=first.time_s)
        return {"alert_id": f"{self.device}-{self.boot_id}-{self._seq}", "device": self.device,
                "patient": self.patient, "kind": kind, "time": when.isoformat(timespec="milliseconds"),
                "beat_index": first.sample, "beats": n, "class": label,
                "confidence_permille": int(round(1000 * confidence)), "heart_rate_bpm": int(round(hr)),
                "model_version": first.model_version, "schema": ALERT_SCHEMA}
