"""The device loop: samples in, classified beats out to pluggable sinks.

Source -> invalid-sample guard -> (resample to the model's rate) -> BeatStream -> BeatClassifier (int8,
batch 1) -> sinks. A beat whose signal quality (``signal_quality``) is unusable is labelled Q and not
classified: it carries its quality index, and alerts never start from it.
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
from edge_runtime.sample_guard import SampleGuard

log = logging.getLogger(__name__)
#: The AAMI class of beats the signal quality rules out: unclassifiable.
UNCLASSIFIABLE = "Q"


@dataclass(frozen=True)
class BeatResult:
    sample: int  # in the source's own sample numbering
    time_s: float
    label: str  # AAMI class
    confidence: float
    heart_rate_bpm: float
    model_version: str
    inference_ms: float = 0.0
    quality: float = 1.0  # signal-quality index of the beat's stretch, 0..1 (signal_quality.BeatQuality)
    usable: bool = True  # False: labelled Q (unclassifiable), never starts an alert
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
    invalid_samples: int = 0
    lead_off_s: float = 0.0
    poor_signal_s: float = 0.0
    unusable_beats: int = 0
    recoveries: dict[str, int] = field(default_factory=dict)

    @property
    def signal_s(self) -> float:
        return self.samples / self.fs_hz

    def to_dict(self) -> dict:
        return {"samples": self.samples, "signal_seconds": self.signal_s, "beats": self.beats,
                "wall_seconds": self.wall_s, "inference_seconds": self.inference_s,
                "realtime_factor": self.signal_s / self.wall_s if self.wall_s else None, "per_class": self.per_class,
                "invalid_samples": self.invalid_samples, "lead_off_seconds": round(self.lead_off_s, 2),
                "poor_signal_seconds": round(self.poor_signal_s, 2), "unusable_beats": self.unusable_beats,
                "recoveries": self.recoveries}

    def signal_status(self) -> dict[str, int]:
        """The device-status fields of signal quality (integers: the status JSON is canonical)."""
        return {"lead_off_s": int(self.lead_off_s), "poor_signal_s": int(self.poor_signal_s),
                "invalid_samples": self.invalid_samples, "unusable_beats": self.unusable_beats}


class EdgeRuntime:
    def __init__(self, classifier: BeatClassifier, source_fs_hz: float, sinks: list[BeatSink],
                 status: dict | None = None) -> None:
        """``status``: a dict (e.g. ``AlertPublisher.extra_status``) kept updated with ``RunStats.signal_status``."""
        self.classifier = classifier
        self.signal = classifier.metadata.signal
        self.source_fs_hz = source_fs_hz
        self.resampler = StreamingResampler(source_fs_hz, self.signal.fs_hz)
        if not self.resampler.identity:
            log.info("resampling %.6g Hz input to the model's %.6g Hz (x%d/%d)", source_fs_hz, self.signal.fs_hz,
                     self.resampler.up, self.resampler.down)
        self.guard = SampleGuard()
        self.stream = BeatStream(self.signal, features=classifier.metadata.rr_feature_names)
        self.sinks = sinks
        self.stats = RunStats(source_fs_hz)
        self._status = status
        if status is not None:
            status.update(self.stats.signal_status())
        self._classes = classifier.metadata.class_names
        self._version = classifier.metadata.model_version
        self._swap_lock = threading.Lock()

    def swap_classifier(self, classifier: BeatClassifier) -> None:
        """Use a newly installed model from the next beat on; it must expect the same inputs."""
        new, old = classifier.metadata, self.classifier.metadata
        if ((new.signal.digest(), new.class_names, new.rr_feature_names)
                != (old.signal.digest(), old.class_names, old.rr_feature_names)):
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
                clean, _ = self.guard.process(chunk)
                self._emit(self.stream.process(self.resampler.process(clean)))
                self._update_signal_stats()
            self._emit(self.stream.flush())
            self._update_signal_stats()
        finally:
            for sink in self.sinks:
                sink.close()
            self.stats.wall_s = time.perf_counter() - started
        return self.stats

    def _update_signal_stats(self) -> None:
        quality = self.stream.quality
        self.stats.invalid_samples = self.guard.invalid
        self.stats.lead_off_s = quality.lead_off_s
        self.stats.poor_signal_s = quality.poor_s
        self.stats.recoveries = self.stream.recoveries()
        if self._status is not None:
            self._status.update(self.stats.signal_status())

    def _emit(self, beats) -> None:
        for beat in beats:
            sample = int(self.resampler.to_input_index(beat.sample))
            quality = beat.quality
            if quality is not None and not quality.usable:
                self.stats.unusable_beats += 1
                result = BeatResult(sample, sample / self.source_fs_hz, UNCLASSIFIABLE, 0.0,
                                    60.0 / float(beat.rr[0]), self._version, 0.0, quality.index, False,
                                    wave=beat.wave, rr=beat.rr)
            else:
                t0 = time.perf_counter()
                with self._swap_lock:
                    probs = self.classifier.predict_proba(beat.wave[None, :], beat.rr[None, :])[0]
                elapsed = time.perf_counter() - t0
                self.stats.inference_s += elapsed
                k = int(np.argmax(probs))
                result = BeatResult(sample, sample / self.source_fs_hz, self._classes[k], float(probs[k]),
                                    60.0 / float(beat.rr[0]), self._version, 1000 * elapsed,
                                    1.0 if quality is None else quality.index, wave=beat.wave, rr=beat.rr)
            self.stats.beats += 1
            self.stats.per_class[result.label] = self.stats.per_class.get(result.label, 0) + 1
            for sink in self.sinks:
                sink.on_beat(result)


class CsvSink:
    """One row per beat: sample, time_s, class, confidence, heart_rate_bpm, model_version, quality."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(["sample", "time_s", "class", "confidence", "heart_rate_bpm", "model_version",
                               "quality"])

    def on_beat(self, beat: BeatResult) -> None:
        self._writer.writerow([beat.sample, f"{beat.time_s:.4f}", beat.label, f"{beat.confidence:.4f}",
                               f"{beat.heart_rate_bpm:.1f}", beat.model_version, f"{beat.quality:.3f}"])

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

    @property
    def path(self) -> Path:
        return self.out_dir / f"{self.record_name}.{self.extension}"

    @property
    def beats(self) -> int:
        return len(self._samples)

    def close(self) -> None:
        import wfdb

        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not self._samples:
            # wfdb.wrann refuses an empty list; an annotation file holding only its end marker is valid WFDB
            self.path.write_bytes(b"\x00\x00")
            log.warning("no beats detected: %s holds no annotation", self.path)
            return
        wfdb.wrann(self.record_name, self.extension, np.asarray(self._samples, np.int64), self._symbols,
                   fs=self.fs_hz, write_dir=str(self.out_dir))
