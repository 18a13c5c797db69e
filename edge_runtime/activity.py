"""The activity runner: IMU samples -> 2.56 s windows -> int8 activity classifier -> activity events and status.

Every ``hop`` samples (from the model's ``EdgeContract``) the last ``window`` samples are standardised with the
contract's training-subject constants and classified (batch 1, as on a microcontroller). The device status keeps
the time spent in each activity (``hop / fs`` seconds per classified window), the current activity and the
bouts (runs of windows with one label). Postural transitions are not a class: they come out as one of the six.

Invalid samples (NaN from the source) are held at the last valid value; a window with more than
``max_invalid_share`` of them is not classified (counted in ``unusable_windows``), so a sensor dropout is never
reported as an activity.

Alert: ``prolonged_inactivity``, once per bout, when no walking (level, up or down stairs) has been seen for
``inactive_after_s`` seconds of signal (default 30 min): the "has not moved" check of a wearable, not a fall
detector (HAPT has no falls). The alert has the bus schema's required fields (``broker.device_messages``: the
first still sample as ``beat_index``, the still windows as ``beats``, ``heart_rate_bpm`` 0, no strip), so the
fleet runner hands it to ``AlertPublisher.submit`` unchanged; ``emit`` receives each alert and ``status_out``
(the publisher's ``extra_status``) the activity fields of the retained device status.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from broker.device_messages import ALERT_SCHEMA
from edge_runtime.classifier import ModelMismatch
from edge_runtime.task_model import TaskInterpreter

log = logging.getLogger(__name__)
#: Activities that count as moving for the inactivity alert.
MOVING = ("walking", "upstairs", "downstairs")


class WindowClassifier:
    """An exported activity model (float32 or int8) run by ``TaskInterpreter``, fed raw IMU windows: the
    contract's standardisation is applied here, as on the device."""

    def __init__(self, interpreter: TaskInterpreter) -> None:
        self.contract = interpreter.contract
        if self.contract.source != "imu" or not self.contract.window:
            raise ModelMismatch(f"model of task {self.contract.task!r} reads {self.contract.source!r} "
                                "rows, not IMU windows: give an activity (--task har) model")
        prep = self.contract.preprocessing
        if len(prep.get("mean", ())) != len(self.contract.channels) or len(prep.get("std", ())) != len(
                self.contract.channels):
            raise ModelMismatch("the model's IMU contract lacks one mean and std per channel")
        self.interpreter = interpreter
        self.metadata = interpreter.metadata
        self.class_names = tuple(interpreter.metadata.class_names)
        self.mean = np.asarray(prep["mean"], np.float32)
        self.std = np.asarray(prep["std"], np.float32)
        self.hop = int(prep.get("hop", self.contract.window))

    @classmethod
    def from_file(cls, model_path: Path) -> WindowClassifier:
        return cls(TaskInterpreter.from_file(Path(model_path)))

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        """Class probabilities for raw (unstandardised) windows of shape (n, window, channels)."""
        z = (np.asarray(windows, np.float32) - self.mean) / self.std
        return self.interpreter.predict({"imu": z})


@dataclass(frozen=True)
class ActivityPolicy:
    inactive_after_s: float = 1800.0
    max_invalid_share: float = 0.1

    def __post_init__(self) -> None:
        if self.inactive_after_s <= 0 or not 0 <= self.max_invalid_share < 1:
            raise ValueError("inactive_after_s must be > 0 and max_invalid_share in [0, 1)")


@dataclass(frozen=True)
class ActivityWindow:
    index: int
    end_sample: int  # one past the window's last sample, in the source's numbering
    time_s: float  # the window's end
    activity: str
    confidence: float


@dataclass
class ActivityStatus:
    """What the device reports: seconds per activity, the current one, bouts, samples and drops."""

    seconds: dict[str, float] = field(default_factory=dict)
    current: str | None = None
    bouts: list[dict] = field(default_factory=list)
    windows: int = 0
    unusable_windows: int = 0
    samples: int = 0
    invalid_samples: int = 0

    def bus_fields(self, alerts: int) -> dict:
        """The status as the device publishes it: integers only (canonical JSON, as firmware would write it)."""
        return {"activity_seconds": {k: round(v) for k, v in sorted(self.seconds.items())},
                "activity_current": self.current, "activity_bouts": len(self.bouts),
                "activity_windows": self.windows, "activity_unusable_windows": self.unusable_windows,
                "imu_samples": self.samples, "invalid_samples": self.invalid_samples, "inactivity_alerts": alerts}

    def to_dict(self) -> dict:
        return {"seconds_per_activity": {k: round(v, 2) for k, v in sorted(self.seconds.items())},
                "current_activity": self.current, "bouts": len(self.bouts), "windows": self.windows,
                "unusable_windows": self.unusable_windows, "samples": self.samples,
                "invalid_samples": self.invalid_samples}


class ActivityRunner:
    """Feed chunks of (n, 6) samples; collects windows, status and alerts. Pure logic apart from inference."""

    def __init__(self, classifier: WindowClassifier, fs_hz: float, channels: int, device: str = "dev1",
                 patient: str = "anonymous", policy: ActivityPolicy = ActivityPolicy(),
                 stream_start: dt.datetime | None = None, emit: Callable[[dict], None] | None = None,
                 status_out: dict | None = None) -> None:
        """``emit``: called with each alert as it is raised (e.g. ``AlertPublisher.submit``); ``status_out``: a
        dict kept up to date with ``ActivityStatus.bus_fields`` after every window."""
        classifier.contract.check_source(channels, fs_hz)
        self.classifier, self.fs_hz, self.policy = classifier, fs_hz, policy
        self.device, self.patient = device, patient
        self.stream_start = stream_start or dt.datetime.now(dt.timezone.utc)
        self._boot = uuid.uuid4().hex[:8]
        self.window, self.hop = classifier.contract.window, classifier.hop
        self._buf = np.zeros((0, channels), np.float64)
        self._bad = np.zeros(0, bool)
        self._last = np.zeros(channels)
        self._buf_start = 0  # source index of self._buf[0]
        self._next_end = self.window
        self._still_since: float | None = None
        self._still_windows = 0
        self._emit, self._status_out = emit, status_out
        self._alerted = False
        self.status = ActivityStatus()
        self.results: list[ActivityWindow] = []
        self.alerts: list[dict] = []
        self.inference_s = 0.0

    def run(self, chunks: Iterable[np.ndarray]) -> ActivityStatus:
        for chunk in chunks:
            self.feed(chunk)
        return self.status

    def feed(self, chunk: np.ndarray) -> list[ActivityWindow]:
        """Take the next samples (rows of the contract's channels); returns the windows they completed."""
        x = np.asarray(chunk, np.float64)
        if x.ndim != 2 or x.shape[1] != self._buf.shape[1]:
            raise ValueError(f"need chunks of shape (n, {self._buf.shape[1]}), got {x.shape}")
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            x = x.copy()
            for i in np.flatnonzero(bad):  # hold the last valid sample (rare: a loop is fine)
                x[i] = self._last if i == 0 else x[i - 1]
            self.status.invalid_samples += int(bad.sum())
        if len(x):
            self._last = x[-1]
        self.status.samples += len(x)
        self._buf, self._bad = np.concatenate([self._buf, x]), np.concatenate([self._bad, bad])
        new = []
        while self._next_end <= self.status.samples:
            lo = self._next_end - self.window - self._buf_start
            share = float(self._bad[lo:lo + self.window].mean())
            result = self._classify(self._buf[lo:lo + self.window], share, self._next_end)
            if result is not None:
                new.append(result)
            self._next_end += self.hop
        drop = self._next_end - self.window - self._buf_start  # samples no future window needs
        if drop > 0:
            self._buf, self._bad, self._buf_start = self._buf[drop:], self._bad[drop:], self._buf_start + drop
        self._publish_status()
        return new

    def _classify(self, samples: np.ndarray, invalid_share: float, end: int) -> ActivityWindow | None:
        t = end / self.fs_hz
        if invalid_share > self.policy.max_invalid_share:
            self.status.unusable_windows += 1
            return None
        t0 = time.perf_counter()
        probs = self.classifier.predict_proba(samples[None])[0]
        self.inference_s += time.perf_counter() - t0
        k = int(np.argmax(probs))
        result = ActivityWindow(self.status.windows, end, t, self.classifier.class_names[k], float(probs[k]))
        self._account(result)
        return result

    def _publish_status(self) -> None:
        if self._status_out is not None:
            self._status_out.update(self.status.bus_fields(len(self.alerts)))

    def _account(self, w: ActivityWindow) -> None:
        s = self.status
        step = (self.window if s.windows == 0 else self.hop) / self.fs_hz
        s.seconds[w.activity] = s.seconds.get(w.activity, 0.0) + step
        s.windows += 1
        self.results.append(w)
        if w.activity != s.current:
            s.bouts.append({"activity": w.activity, "start_s": round(w.time_s - step, 2), "windows": 0})
            s.current = w.activity
        s.bouts[-1]["windows"] += 1
        if w.activity in MOVING:
            self._still_since, self._still_windows, self._alerted = None, 0, False
            return
        if self._still_since is None:
            self._still_since = w.time_s - step
        self._still_windows += 1
        if not self._alerted and w.time_s - self._still_since >= self.policy.inactive_after_s:
            self._alerted = True
            alert = self._alert(w, self._still_since)
            self.alerts.append(alert)
            if self._emit is not None:
                self._emit(alert)

    def _alert(self, w: ActivityWindow, still_since: float) -> dict:
        """The bus schema's fields (integers only); an IMU alert has no heart rate (0) and no ECG strip."""
        when = self.stream_start + dt.timedelta(seconds=still_since)
        return {"alert_id": f"{self.device}-{self._boot}-{len(self.alerts) + 1}", "device": self.device,
                "patient": self.patient, "kind": "prolonged_inactivity", "time": when.isoformat(timespec="seconds"),
                "beat_index": round(still_since * self.fs_hz), "beats": self._still_windows,
                "window_index": w.index, "inactive_s": round(w.time_s - still_since),
                "class": w.activity, "confidence_permille": round(1000 * w.confidence), "heart_rate_bpm": 0,
                "model_version": self.classifier.metadata.model_version, "schema": ALERT_SCHEMA}
