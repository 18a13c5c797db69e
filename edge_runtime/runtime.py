"""The device loop: samples in, classified beats out to pluggable sinks.

Source -> (resample to the model's rate) -> BeatStream -> BeatClassifier (int8, batch 1) -> sinks.
Sinks are small objects with ``on_beat`` and ``close`` (a CSV file, a WFDB annotation file, and the
alert publisher of the MQTT side), so a new output never touches the loop.
"""
from __future__ import annotations

import csv
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np

from edge_runtime.beat_stream import BeatStream
from edge_runtime.classifier import BeatClassifier
from edge_runtime.resample import StreamingResampler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BeatResult:
    sample: int  # in the source's own sample numbering
    time_s: float
    label: str  # AAMI class
    confidence: float
    heart_rate_bpm: float
    model_version: str
    inference_ms: float = 0.0
    #: The classifier's inputs for this beat (window and unscaled RR features): what a clinician's label of
    #: the beat trains the personalized head on. Not written by the file sinks.
    wave: np.ndarray | None = field(default=None, repr=False, compare=False)
    rr: np.ndarray | None = field(default=None, repr=False, compare=False)


class BeatSink(Protocol):
    def on_beat(self, beat: BeatResult) -> None: ...
    def close(self) -> None: ...


@dataclass
class RunStats:
    fs_hz: float
    samples: int = 0
    beats: int = 0
    wall_s: float = 0.0
    inference_s: float = 0.0
    per_class: dict[str, int] = field(default_factory=dict)

    @property
    def signal_s(self) -> float:
        return self.samples / self.fs_hz

    def to_dict(self) -> dict:
        return {"samples": self.samples, "signal_seconds": self.signal_s, "beats": self.beats,
                "wall_seconds": self.wall_s, "inference_seconds": self.inference_s,
                "realtime_factor": self.signal_s / self.wall_s if self.wall_s else None, "per_class": self.per_class}


class EdgeRuntime:
    def __init__(self, classifier: BeatClassifier, source_fs_hz: float, sinks: list[BeatSink]) -> None:
        self.classifier = classifier
        self.signal = classifier.metadata.signal
        self.source_fs_hz = source_fs_hz
        self.resampler = StreamingResampler(source_fs_hz, self.signal.fs_hz)
        if not self.resampler.identity:
            log.info("resampling %.6g Hz input to the model's %.6g Hz (x%d/%d)", source_fs_hz, self.signal.fs_hz,
                     self.resampler.up, self.resampler.down)
        self.stream = BeatStream(self.signal)
        self.sinks = sinks
        self.stats = RunStats(source_fs_hz)
        self._classes = classifier.metadata.class_names
        self._version = classifier.metadata.model_version
        self._swap_lock = threading.Lock()

    def swap_classifier(self, classifier: BeatClassifier) -> None:
        """Use a newly installed model from the next beat on; it must expect the same inputs."""
        new, old = classifier.metadata, self.classifier.metadata
        if (new.signal.digest(), new.class_names) != (old.signal.digest(), old.class_names):
            raise ValueError("the new model expects another signal pipeline or classes; restart the runtime")
        with self._swap_lock:
            self.classifier = classifier
            self._version = new.model_version
        log.info("now classifying with model %s", new.model_version)

    def run(self, chunks: Iterable[np.ndarray]) -> RunStats:
        started = time.perf_counter()
        try:
            for chunk in chunks:
                self.stats.samples += len(chunk)
                self._emit(self.stream.process(self.resampler.process(chunk)))
            self._emit(self.stream.flush())
        finally:
            for sink in self.sinks:
                sink.close()
            self.stats.wall_s = time.perf_counter() - started
        return self.stats

    def _emit(self, beats) -> None:
        for beat in beats:
            t0 = time.perf_counter()
            with self._swap_lock:
                probs = self.classifier.predict_proba(beat.wave[None, :], beat.rr[None, :])[0]
            elapsed = time.perf_counter() - t0
            self.stats.inference_s += elapsed
            k = int(np.argmax(probs))
            sample = int(self.resampler.to_input_index(beat.sample))
            result = BeatResult(sample, sample / self.source_fs_hz, self._classes[k], float(probs[k]),
                                60.0 / float(beat.rr[0]), self._version, 1000 * elapsed, beat.wave, beat.rr)
            self.stats.beats += 1
            self.stats.per_class[result.label] = self.stats.per_class.get(result.label, 0) + 1
            for sink in self.sinks:
                sink.on_beat(result)


class CsvSink:
    """One row per beat: sample, time_s, class, confidence, heart_rate_bpm, model_version."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(["sample", "time_s", "class", "confidence", "heart_rate_bpm", "model_version"])

    def on_beat(self, beat: BeatResult) -> None:
        self._writer.writerow([beat.sample, f"{beat.time_s:.4f}", beat.label, f"{beat.confidence:.4f}",
                               f"{beat.heart_rate_bpm:.1f}", beat.model_version])

    def close(self) -> None:
        self._file.close()


class WfdbAnnotationSink:
    """A WFDB annotation file (AAMI symbols N, S, V, F, Q) beside nothing else: ``<dir>/<record>.<extension>``,
    readable by any WFDB tool and by ``pulsewire edge score``."""

    def __init__(self, record_name: str, out_dir: Path, fs_hz: float, extension: str = "pw") -> None:
        self.record_name, self.out_dir, self.fs_hz, self.extension = record_name, Path(out_dir), fs_hz, extension
        self._samples: list[int] = []
        self._symbols: list[str] = []

    def on_beat(self, beat: BeatResult) -> None:
        self._samples.append(beat.sample)
        self._symbols.append(beat.label)

    def close(self) -> None:
        import wfdb

        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not self._samples:
            log.warning("no beats detected: %s.%s not written", self.record_name, self.extension)
            return
        wfdb.wrann(self.record_name, self.extension, np.asarray(self._samples, np.int64), self._symbols,
                   fs=self.fs_hz, write_dir=str(self.out_dir))
