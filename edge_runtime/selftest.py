"""`pulsewire edge selftest`: what an engineer runs on a freshly flashed Raspberry Pi.

Checks, each reported pass/fail: the interpreter loads; the model matches its metadata (hash, shapes,
features); a bundled one-minute MIT-BIH excerpt streams through the pipeline with exactly the stored
R-peak detections; streamed classes equal a batch run of the same model; throughput in beats/s.
The excerpt (record 208, first 60 s, lead MLII) is MIT-BIH data, ODC-By 1.0: see selftest_data/README.md.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "selftest_data" / "mitdb208_60s.npz"


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def load_excerpt() -> tuple[np.ndarray, float, np.ndarray]:
    """(signal in mV, fs, expected R-peak samples)."""
    with np.load(DATA) as d:
        return d["adc"].astype(np.float64) / float(d["gain"]), float(d["fs"]), d["expected_peaks"]


def run_selftest(model_path: Path | None = None, classifier=None) -> list[Check]:
    checks: list[Check] = []

    def check(name: str, fn) -> object:
        try:
            value, detail = fn()
            checks.append(Check(name, True, detail))
            return value
        except Exception as exc:  # a self test reports every failure, it does not stop at the first
            checks.append(Check(name, False, f"{exc.__class__.__name__}: {exc}"))
            return None

    from edge_runtime.beat_stream import BeatStream, offline_beats
    from edge_runtime.classifier import BeatClassifier
    from edge_runtime.interpreter import available_backend

    check("interpreter", lambda: (None, f"{available_backend()} imports"))
    if classifier is None:
        classifier = check("model and metadata", lambda: (BeatClassifier.from_file(Path(model_path)),
                                                          f"{model_path}: hash, shapes and features agree"))
    else:
        checks.append(Check("model and metadata", True, classifier.metadata.model_version))
    signal, fs, expected = load_excerpt()

    def stream():
        s = BeatStream()
        beats, t0 = [], time.perf_counter()
        for i in range(0, signal.size, int(fs // 10)):
            beats += s.process(signal[i:i + int(fs // 10)])
        beats += s.flush()
        return (beats, time.perf_counter() - t0), f"{len(beats)} beats"

    streamed = check("stream the bundled excerpt", stream)
    if streamed is None:
        return checks
    beats, stream_s = streamed
    peaks, inputs = offline_beats(signal)

    def detections():
        if not np.array_equal(peaks, expected):
            raise AssertionError(f"{len(peaks)} R peaks, {len(expected)} expected; first difference at "
                                 f"sample {int(np.setxor1d(peaks, expected)[0])}")
        return None, f"{len(peaks)} R peaks exactly as stored"

    check("R-peak detections", detections)
    if classifier is None:
        return checks

    def classes():
        t0 = time.perf_counter()
        streamed_cls = classifier.predict(np.stack([b.wave for b in beats]), np.stack([b.rr for b in beats]))
        rate = len(beats) / (stream_s + time.perf_counter() - t0)
        batch_cls = classifier.predict(inputs.waves, inputs.rr)
        if not np.array_equal(streamed_cls, batch_cls):
            raise AssertionError(f"{int(np.sum(streamed_cls != batch_cls))} beats classified differently")
        counts = {classifier.metadata.class_names[k]: int(n) for k, n in zip(*np.unique(batch_cls, return_counts=True))}
        return rate, f"stream == batch for {len(beats)} beats {counts}; {rate:,.0f} beats/s"

    check("classes and throughput", classes)
    return checks


def regenerate(record_dir: Path) -> None:
    """Rewrite the bundled excerpt and its expected detections (after a deliberate detector change)."""
    import wfdb

    from edge_runtime.beat_stream import offline_beats

    rec = wfdb.rdrecord(str(record_dir / "208"), channels=[0], physical=False, sampto=60 * 360)
    adc = rec.d_signal[:, 0].astype(np.int16)
    gain = float(rec.adc_gain[0])
    peaks, _ = offline_beats(adc.astype(np.float64) / gain)
    DATA.parent.mkdir(exist_ok=True)
    np.savez_compressed(DATA, adc=adc, gain=gain, fs=float(rec.fs), expected_peaks=peaks)
