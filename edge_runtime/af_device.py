"""An AF-monitoring device without a beat classifier: samples -> R-peaks -> ``AfMonitor``.

The device has no annotations: it measures RR intervals from its own R-peak detector (the beat stream the beat
task uses: invalid-sample guard, resampling to the detector's rate, band-pass, detector, signal quality). Beats
of unusable signal quality reach the monitor marked unusable, which restarts its RR window. Each beat carries its
window (``wave``): the monitor reads the atrial activity before the QRS from it.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import numpy as np

from edge_runtime.beat_stream import BeatStream
from edge_runtime.resample import StreamingResampler
from edge_runtime.runtime import UNCLASSIFIABLE, BeatResult
from edge_runtime.sample_guard import SampleGuard
from edge_runtime.signal_config import SignalConfig

log = logging.getLogger(__name__)
#: Label of a beat the AF device did not classify (it only times R-peaks).
UNLABELLED = "-"


def rpeak_beats(chunks: Iterable[np.ndarray], source_fs_hz: float, model_version: str,
                signal: SignalConfig | None = None) -> Iterator[BeatResult]:
    """R-peaks of a sample stream (mV) as beats in the source's own sample numbering and seconds."""
    if not (np.isfinite(source_fs_hz) and source_fs_hz > 0):
        raise ValueError(f"sampling rate must be a positive number of Hz, got {source_fs_hz}")
    signal = signal or SignalConfig()
    guard, resampler, stream = SampleGuard(), StreamingResampler(source_fs_hz, signal.fs_hz), BeatStream(signal)

    def emit(beats) -> Iterator[BeatResult]:
        for beat in beats:
            sample = int(resampler.to_input_index(beat.sample))
            usable = beat.quality is None or beat.quality.usable
            yield BeatResult(sample, sample / source_fs_hz, UNLABELLED if usable else UNCLASSIFIABLE, 1.0,
                             60.0 / float(beat.rr[0]), model_version,
                             quality=1.0 if beat.quality is None else beat.quality.index, usable=usable,
                             wave=beat.wave)

    for chunk in chunks:
        clean, _ = guard.process(np.asarray(chunk, np.float64))
        yield from emit(stream.process(resampler.process(clean)))
    yield from emit(stream.flush())
