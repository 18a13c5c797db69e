"""The beats a device remembers and the clinician-labelled ones it keeps for its personalized head.

``BeatMemory`` is a sink holding the classifier inputs of the latest beats by sample index, so labels
that arrive minutes later (a clinician reviewing an alert) find their beats. ``LabelStore`` persists
the labelled beats (``labels.npz``, replaced atomically) so the personalization survives a restart;
a beat labelled twice keeps its latest label.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from edge_runtime.runtime import BeatResult

log = logging.getLogger(__name__)


class BeatMemory:
    """A ``BeatSink``: the last ``capacity`` beats' (wave, rr), looked up by their sample index."""

    def __init__(self, capacity: int = 20_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._beats: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def on_beat(self, beat: BeatResult) -> None:
        if beat.wave is None or beat.rr is None:
            return
        with self._lock:
            self._beats[beat.sample] = (np.asarray(beat.wave, np.float32), np.asarray(beat.rr, np.float32))
            while len(self._beats) > self.capacity:
                self._beats.popitem(last=False)

    def close(self) -> None:
        pass

    def lookup(self, samples: list[int]) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(the samples found, their waves, their RR features); missing beats are left out."""
        with self._lock:
            found = [s for s in samples if s in self._beats]
            pairs = [self._beats[s] for s in found]
        if not pairs:
            return [], np.empty((0, 0), np.float32), np.empty((0, 0), np.float32)
        return found, np.stack([w for w, _ in pairs]), np.stack([r for _, r in pairs])


class LabelStore:
    FILE = "labels.npz"

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / self.FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.samples = np.empty(0, np.int64)
        self.alerts = np.empty(0, "<U128")
        self.labels = np.empty(0, "<U8")
        self.waves: np.ndarray | None = None
        self.rr: np.ndarray | None = None
        if self.path.is_file():
            with np.load(self.path) as data:
                self.samples, self.alerts, self.labels = data["samples"], data["alerts"], data["labels"]
                self.waves, self.rr = data["waves"], data["rr"]
            log.info("%d clinician-labelled beat(s) loaded from %s", len(self), self.path)

    def __len__(self) -> int:
        return int(self.samples.size)

    def add(self, alert_id: str, samples: list[int], waves: np.ndarray, rr: np.ndarray, labels: list[str]) -> None:
        """Add (or relabel) beats and write the file before returning."""
        with self._lock:
            keep = ~np.isin(self.samples, samples) if len(self) else np.zeros(0, bool)
            self.samples = np.concatenate([self.samples[keep], np.asarray(samples, np.int64)])
            self.alerts = np.concatenate([self.alerts[keep], np.full(len(samples), alert_id, "<U128")])
            self.labels = np.concatenate([self.labels[keep], np.asarray(labels, "<U8")])
            self.waves = waves if self.waves is None else np.concatenate([self.waves[keep], waves])
            self.rr = rr if self.rr is None else np.concatenate([self.rr[keep], rr])
            tmp = self.path.with_suffix(".tmp.npz")
            np.savez(tmp, samples=self.samples, alerts=self.alerts, labels=self.labels, waves=self.waves, rr=self.rr)
            os.replace(tmp, self.path)

    def training_set(self, class_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(waves, rr, class indices) of the labelled beats whose class the model knows."""
        with self._lock:
            known = np.isin(self.labels, list(class_names))
            index = {c: i for i, c in enumerate(class_names)}
            if self.waves is None or not known.any():
                return np.empty((0, 0), np.float32), np.empty((0, 0), np.float32), np.empty(0, np.int64)
            return (self.waves[known], self.rr[known],
                    np.asarray([index[c] for c in self.labels[known]], np.int64))
