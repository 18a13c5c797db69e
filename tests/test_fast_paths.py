"""The stream's fast replacements for scipy / numpy calls are the same arithmetic, bit for bit, on real ECG:
FIR filtering (lfilter), second-order sections (sosfilt), window medians and the amplitude median."""
from __future__ import annotations

import numpy as np
from scipy import signal as sp_signal

from edge_runtime.beat_windows import row_medians, small_median
from edge_runtime.filtering import bandpass_sos, sosfilt_chunk
from edge_runtime.rpeak import DetectorConfig, fir_filter
from edge_runtime.signal_config import SignalConfig
from training.data.mitdb import load_record


def _chunks(x: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)
    i = 0
    while i < x.size:
        n = int(rng.integers(1, 700))
        yield x[i:i + n]
        i += n


def test_fir_and_sos_chunks_equal_scipy_bit_for_bit(excerpt_dir):
    x = load_record(excerpt_dir, "208x").signal_mv[:20000]
    cfg = DetectorConfig()
    taps = np.full(cfg.samples(cfg.integration_s), 1.0 / cfg.samples(cfg.integration_s))
    for sos in (bandpass_sos(SignalConfig()), cfg.qrs_sos()):
        zi_a = zi_b = sp_signal.sosfilt_zi(sos) * x[0]
        for part in _chunks(x, 0):
            a, zi_a = sp_signal.sosfilt(sos, part, zi=zi_a)
            b, zi_b = sosfilt_chunk(sos, part, zi_b)
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(zi_a, zi_b)
    zi_a = zi_b = np.zeros(taps.size - 1)
    for part in _chunks(x * x, 1):  # chunks shorter and longer than the taps
        a, zi_a = sp_signal.lfilter(taps, 1.0, part, zi=zi_a)
        b, zi_b = fir_filter(taps, part, zi_b)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(zi_a, zi_b)
    assert np.any(zi_b != 0)


def test_medians_equal_numpy_bit_for_bit(excerpt_dir):
    x = load_record(excerpt_dir, "208x").signal_mv
    rows = x[:100 * 400].reshape(400, 100)
    np.testing.assert_array_equal(row_medians(rows), np.median(rows, axis=1))
    np.testing.assert_array_equal(row_medians(rows[:, :99]), np.median(rows[:, :99], axis=1))
    for n in range(1, 9):
        for start in range(0, 4000, 97):
            values = np.abs(x[start:start + n])
            assert small_median(values.tolist()) == float(np.median(values))
