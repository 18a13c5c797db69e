"""From raw samples to classifier inputs on a stream: filter, detect, window, RR features.

A beat is ready when its successor has been detected (the post-RR feature needs it) and its window's
last sample has arrived; a beat is therefore reported about one RR interval after it happened. The
same functions as training cut the window and compute the features, and memory stays bounded
(a few seconds of samples and the last ``rr_long_beats`` intervals) however long the stream runs.
``offline_beats`` is the batch reference the stream must equal exactly (on a signal without lead-off gaps:
after one the stream starts its RR history again, as at its start).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edge_runtime.beat_inputs import BeatInputs, beat_inputs
from edge_runtime.beat_windows import cut_windows, small_median
from edge_runtime.filtering import StreamingBandpass, bandpass
from edge_runtime.rpeak import DetectorConfig, StreamingRPeakDetector, detect_rpeaks
from edge_runtime.rr_features import rr_feature_row
from edge_runtime.sample_guard import SampleGuard
from edge_runtime.signal_quality import BeatQuality, QualityConfig, SignalQuality
from edge_runtime.sample_history import SampleHistory
from edge_runtime.signal_config import RR_FEATURE_NAMES, SignalConfig
from edge_runtime.template_features import FEATURE_SETS, TemplateTracker


#: Flat signal (lead off, clipped, invalid samples) of at least this long between two beats is a gap.
GAP_S = 0.5


@dataclass(frozen=True)
class Beat:
    sample: int  # R-peak sample index in the stream
    wave: np.ndarray  # (window_length,) float32, as the model expects
    rr: np.ndarray  # (len(features),) float32, unscaled: RR_FEATURE_NAMES, then any template features
    quality: BeatQuality | None = None  # None only for beats made outside a stream


class BeatStream:
    def __init__(self, signal: SignalConfig = SignalConfig(), detector: DetectorConfig | None = None,
                 quality: QualityConfig = QualityConfig(), features: tuple[str, ...] = RR_FEATURE_NAMES) -> None:
        """``features``: the model's input feature names (``ModelMetadata.rr_feature_names``); with the
        template features the stream keeps a running beat template and appends them to each beat's row."""
        self.signal = signal
        if tuple(features) not in FEATURE_SETS.values():
            raise ValueError(f"unknown feature names {features}; known sets: {sorted(FEATURE_SETS)}")
        self._template = TemplateTracker(signal) if tuple(features) != RR_FEATURE_NAMES else None
        detector = detector or DetectorConfig(fs_hz=signal.fs_hz)
        if detector.fs_hz != signal.fs_hz:
            raise ValueError(f"detector runs at {detector.fs_hz} Hz, the signal config at {signal.fs_hz} Hz")
        self._guard = SampleGuard()
        self._filter = StreamingBandpass(signal)
        self.quality = SignalQuality(signal.fs_hz, quality)
        self._detector = StreamingRPeakDetector(detector)
        self._filtered = SampleHistory()
        self._peaks: deque[int] = deque(maxlen=3)
        self._amplitudes: deque[float] = deque(maxlen=signal.amplitude_beats)
        self._scales: deque[float] = deque(maxlen=3)
        self._rr: deque[float] = deque(maxlen=signal.rr_long_beats + 1)  # + the newest (post-RR)
        self._waiting: list[tuple[int, float, np.ndarray, tuple]] = []  # (sample, scale, rr row, levels)
        self._levels: deque[tuple[float, float]] = deque(maxlen=3)  # detector levels at each of _peaks
        self.beats_detected = 0
        self.gaps = 0  # lead-off gaps after which the RR history started again
        #: Called with every detected R peak (stream sample index), before its beat is complete: benches
        #: score detection on it, including the first and last beats that never get a model window.
        self.on_peak: Callable[[int], None] | None = None

    @property
    def invalid_samples(self) -> int:
        """NaN / infinite samples met so far (held at the last valid value, never filtered)."""
        return self._guard.invalid

    def recoveries(self) -> dict[str, int]:
        """How often the chain started again: band-pass restarts, detector artefacts, flat lines, re-learning."""
        det = self._detector
        return {"filter_restarts": self._filter.restarts, "artefacts": det.artefacts, "flat_lines": det.flat_lines,
                "relearned": det.relearned, "lead_off_gaps": self.gaps}

    def process(self, raw_chunk: np.ndarray) -> list[Beat]:
        raw = np.asarray(raw_chunk, dtype=np.float64)
        if raw.ndim != 1:
            raise ValueError(f"expected a 1-D chunk of samples, got shape {raw.shape}")
        raw, _ = self._guard.process(raw)
        self.quality.process(raw)
        filtered = self._filter.process(raw)
        self._filtered.append(filtered)
        peaks = self._detector.process(filtered)
        for peak, levels in zip(peaks, self._detector.take_levels()):
            self._on_peak(int(peak), levels)
        ready = self._ready()
        self._trim()
        return ready

    def flush(self) -> list[Beat]:
        """End of stream: the last detections; beats whose window runs past the end are dropped, as offline."""
        peaks = self._detector.flush()
        for peak, levels in zip(peaks, self._detector.take_levels()):
            self._on_peak(int(peak), levels)
        ready = self._ready()
        self._waiting = []
        return ready

    def _on_peak(self, peak: int, levels: tuple[float, float]) -> None:
        if self._peaks and self.quality.flat_seconds(self._peaks[-1], peak) >= GAP_S:
            # a lead-off gap: the interval is no RR interval, and the RR context before it is another
            # stretch of the recording; start the RR history again as at the start of the stream
            self._peaks.clear()
            self._levels.clear()
            self._rr.clear()
            self.gaps += 1
        self.beats_detected += 1
        if self.on_peak is not None:
            self.on_peak(peak)
        self._amplitudes.append(abs(float(self._filtered.window(peak, peak + 1)[0])))
        self._scales.append(max(small_median(list(self._amplitudes)), 1e-3)
                            if self.signal.amplitude_normalisation != "none" else 1.0)
        if self._peaks:
            self._rr.append((peak - self._peaks[-1]) / self.signal.fs_hz)
        self._peaks.append(peak)
        self._levels.append(levels)
        if len(self._peaks) == 3:  # the middle beat now has a post-RR
            history = np.asarray(self._rr)[:-1]
            row = rr_feature_row(history, float(self._rr[-1]), self.signal)
            self._waiting.append((self._peaks[1], self._scales[1], row, self._levels[1]))

    def _ready(self) -> list[Beat]:
        cfg = self.signal
        out, still = [], []
        for sample, scale, row, levels in self._waiting:
            if sample - cfg.window_before < 0:
                continue  # the window starts before the stream did: offline drops it too
            if sample + cfg.window_after > self._filtered.end:
                still.append((sample, scale, row, levels))
                continue
            segment = self._filtered.window(sample - cfg.window_before, sample + cfg.window_after)
            wave = cut_windows(segment, np.array([cfg.window_before]), np.array([scale]), cfg)[0]
            if self._template is not None:
                row = np.concatenate([row, self._template.features(wave, row)])
            out.append(Beat(sample, wave, row, self.quality.assess(sample, wave, levels, float(row[0]))))
        self._waiting = still
        return out

    def _trim(self) -> None:
        # waiting beats, peaks that become waiting when their successor arrives, and future peaks
        oldest = min([w[0] for w in self._waiting] + list(self._peaks) + [self._detector.oldest_possible_peak()])
        self._filtered.trim(oldest - self.signal.window_before)
        self.quality.trim(oldest)


def offline_beats(raw: np.ndarray, signal: SignalConfig = SignalConfig(),
                  detector: DetectorConfig | None = None) -> tuple[np.ndarray, BeatInputs]:
    """The batch reference: detect on the whole filtered record, then ``beat_inputs`` at those peaks.
    Returns ``(peaks, inputs)``; the beat samples are ``peaks[inputs.beat_index]``."""
    detector = detector or DetectorConfig(fs_hz=signal.fs_hz)
    clean, _ = SampleGuard().process(raw)
    peaks = detect_rpeaks(bandpass(clean, signal), detector)
    return peaks, beat_inputs(clean, peaks, signal)
