import numpy as np
import pytest

from edge_runtime.beat_inputs import beat_inputs
from edge_runtime.beat_windows import beat_windows
from edge_runtime.filtering import StreamingBandpass, bandpass
from edge_runtime.rr_features import RR_FEATURE_NAMES, rr_features
from edge_runtime.signal_config import SignalConfig
from training.data.mitdb import load_record


def test_streaming_filter_equals_whole_record(excerpt_dir):
    cfg = SignalConfig()
    x = load_record(excerpt_dir, "208x").signal_mv
    stream = StreamingBandpass(cfg)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, x.size), size=40, replace=False))
    chunks = [stream.process(c) for c in np.split(x, cuts)]
    np.testing.assert_allclose(np.concatenate(chunks), bandpass(x, cfg), rtol=0, atol=1e-12)


def test_filter_removes_baseline_and_keeps_qrs_band():
    cfg = SignalConfig()
    t = np.arange(0, 20, 1 / cfg.fs_hz)
    y = bandpass(3.0 + 0.5 * np.sin(2 * np.pi * 0.05 * t) + np.sin(2 * np.pi * 10 * t), cfg)
    steady = y[len(y) // 2:]
    assert abs(steady.mean()) < 0.02
    assert 0.9 < steady.std() * np.sqrt(2) < 1.1  # 10 Hz passes at ~unit gain


def test_rr_features_by_hand():
    cfg = SignalConfig(fs_hz=100.0, band_high_hz=40.0, rr_local_beats=2, rr_long_beats=10)
    peaks = np.array([0, 100, 200, 250, 400])  # RR 1.0, 1.0, 0.5, 1.5 s
    feats, idx = rr_features(peaks, cfg)
    assert idx.tolist() == [1, 2, 3]
    names = list(RR_FEATURE_NAMES)
    np.testing.assert_allclose(feats[:, names.index("pre_rr_s")], [1.0, 1.0, 0.5])
    np.testing.assert_allclose(feats[:, names.index("post_rr_s")], [1.0, 0.5, 1.5])
    np.testing.assert_allclose(feats[:, names.index("local_rr_s")], [1.0, 1.0, 0.75])
    np.testing.assert_allclose(feats[:, names.index("long_rr_s")], [1.0, 1.0, 2.5 / 3], rtol=1e-6)
    np.testing.assert_allclose(feats[:, names.index("pre_over_local")], [1.0, 1.0, 0.5 / 0.75], rtol=1e-6)


def test_rr_features_reject_unsorted_peaks():
    with pytest.raises(ValueError, match="increasing"):
        rr_features(np.array([10, 5, 20]), SignalConfig())


def test_windows_near_edges_are_dropped_not_padded():
    cfg = SignalConfig()
    x = np.zeros(2000)
    x[[50, 1000, 1950]] = 1.0
    waves, idx = beat_windows(x, np.array([50, 1000, 1950]), cfg)
    assert idx.tolist() == [1] and waves.shape == (1, cfg.window_length)
    assert waves[0, cfg.window_before // cfg.decimation] == pytest.approx(1.0)  # R amplitude scaled to 1


def test_beat_inputs_refuse_nan_signal():
    x = np.zeros(5000)
    x[100] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        beat_inputs(x, np.array([1000, 2000, 3000]), SignalConfig())


@pytest.mark.parametrize("kwargs, message", [
    ({"band_high_hz": 200.0}, "band_low_hz"),
    ({"decimation": 3}, "decimation"),
    ({"amplitude_normalisation": "zscore"}, "amplitude_normalisation"),
])
def test_signal_config_explains_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SignalConfig(**kwargs)
