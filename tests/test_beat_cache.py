import os

import numpy as np

from edge_runtime.signal_config import SignalConfig
from training.data.beat_dataset import load_beats, record_beats


def _same(a, b):
    for field in ("waves", "rr", "labels", "record", "sample"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_cache_returns_identical_beats_and_rebuilds_when_source_changes(excerpt_dir, tmp_path):
    cfg = SignalConfig()
    fresh = record_beats(excerpt_dir, "208x", cfg)
    first = load_beats(excerpt_dir, ["208x"], cfg, tmp_path, progress=False)
    entry = next((tmp_path / "beats" / cfg.digest()).glob("208x.npz"))
    _same(first, fresh)
    _same(load_beats(excerpt_dir, ["208x"], cfg, tmp_path, progress=False), fresh)

    stamp = entry.stat().st_mtime_ns
    atr = excerpt_dir / "208x.atr"
    st = atr.stat()
    try:
        os.utime(atr, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        _same(load_beats(excerpt_dir, ["208x"], cfg, tmp_path, progress=False), fresh)
        assert entry.stat().st_mtime_ns != stamp  # stale entry was rebuilt
    finally:
        os.utime(atr, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_cache_is_keyed_by_signal_config(excerpt_dir, tmp_path):
    load_beats(excerpt_dir, ["208x"], SignalConfig(), tmp_path, progress=False)
    other = SignalConfig(amplitude_normalisation="none")
    beats = load_beats(excerpt_dir, ["208x"], other, tmp_path, progress=False)
    assert len(list((tmp_path / "beats").iterdir())) == 2
    _same(beats, record_beats(excerpt_dir, "208x", other))
