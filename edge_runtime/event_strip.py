"""The event strip: the raw ECG around an alert's beats, int16, with the beat labels, for the clinician's page.

``StripRecorder`` sits on both sides of the device loop: ``tap`` passes the source's chunks through and
keeps the last few seconds, ``on_beat`` (a ``BeatSink``) remembers the recent beat labels. When an alert
is raised the publisher asks for ``strip(first_sample)``: from ``before_s`` before the event's first beat
to the newest sample held, at most ``max_s`` seconds. Samples are scaled by ``gain`` units per mV and
clipped to int16, the layout ``broker.device_messages`` documents. Whether a strip is sent at all is the
publisher's decision (fleet policy and the patient's consent), not this module's.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from broker.device_messages import MAX_STRIP_SAMPLES, STRIP_LABELS
from edge_runtime.runtime import BeatResult
from edge_runtime.sample_history import SampleHistory


@dataclass(frozen=True)
class StripPolicy:
    before_s: float = 1.5
    max_s: float = 6.0
    gain: int = 1000  # units per mV: ±32 mV fits int16, 1 µV resolution

    def __post_init__(self) -> None:
        if self.before_s < 0 or self.max_s <= 0 or self.gain <= 0:
            raise ValueError("before_s must be >= 0, max_s and gain > 0")


class StripRecorder:
    def __init__(self, fs_hz: float, policy: StripPolicy = StripPolicy()) -> None:
        self.fs_hz, self.policy = fs_hz, policy
        self._history = SampleHistory()
        self._limit = min(MAX_STRIP_SAMPLES, int(policy.max_s * fs_hz))
        self._beats: deque[tuple[int, str]] = deque(maxlen=256)

    def tap(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The same chunks, remembered: wrap the source given to ``EdgeRuntime.run``."""
        for chunk in chunks:
            self._history.append(np.asarray(chunk, np.float64))
            self._history.trim(self._history.end - 2 * self._limit)
            yield chunk

    def on_beat(self, beat: BeatResult) -> None:
        self._beats.append((beat.sample, beat.label))

    def close(self) -> None:
        pass

    def strip(self, first_sample: int) -> dict | None:
        """The strip for an event whose first beat is ``first_sample``; None if those samples are gone."""
        lo = max(first_sample - int(self.policy.before_s * self.fs_hz), self._history.start)
        hi = min(self._history.end, lo + self._limit)
        values = self._history.window(lo, hi)
        if values.size == 0:
            return None
        samples = np.clip(np.round(values * self.policy.gain), -32768, 32767).astype(int).tolist()
        beats = [[s - lo, label] for s, label in self._beats if lo <= s < hi and label in STRIP_LABELS]
        return {"fs_hz": int(round(self.fs_hz)), "gain": self.policy.gain, "start": int(lo), "samples": samples,
                "beats": beats}
