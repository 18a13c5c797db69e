"""Model input features by named set: the RR features of the cache, plus template features when asked for.

The cache holds waves and the 7 RR features; template features (``edge_runtime.template_features``) are
derived from them per record and lead in time order, the order in which a device meets the beats, so they
need no cache of their own and every cached dataset can be used with any feature set.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_runtime.signal_config import RR_FEATURE_NAMES, SignalConfig
from edge_runtime.template_features import feature_set_named, template_features
from training.config import TrainConfig
from training.data.beat_dataset import BeatDataset, load_beats


def lead_sequences(data: BeatDataset) -> list[np.ndarray]:
    """Row indices of each (record, lead) in time order, as a device meets the beats: the sequences a
    template tracker (Python or C, firmware/core/pw_template.c) runs over, each from a fresh template."""
    key = np.char.add(np.char.add(data.record.astype(str), "|"), data.lead.astype(str))
    out = []
    for k in np.unique(key):
        rows = np.flatnonzero(key == k)
        out.append(rows[np.argsort(data.sample[rows], kind="stable")])
    return out


def with_feature_set(data: BeatDataset, name: str, cfg: SignalConfig) -> BeatDataset:
    """``data`` whose ``rr`` holds the columns of feature set ``name`` (the RR features first, unchanged)."""
    names = feature_set_named(name)
    if data.rr.shape[1] == len(names):
        return data
    if data.rr.shape[1] != len(RR_FEATURE_NAMES):
        raise ValueError(f"expected {len(RR_FEATURE_NAMES)} cached RR features, got {data.rr.shape[1]}")
    if names == RR_FEATURE_NAMES:
        return data
    extra = np.zeros((len(data), len(names) - len(RR_FEATURE_NAMES)), np.float32)
    for rows in lead_sequences(data):
        extra[rows] = template_features(data.waves[rows], data.rr[rows], cfg)
    return BeatDataset(data.waves, np.concatenate([data.rr, extra], axis=1), data.labels, data.record,
                       data.sample, data.lead)


def load_feature_beats(data_dir: Path, records: Sequence[str], cache_root: Path | None, features: str | None = None,
                       signal: SignalConfig | None = None, progress: bool = False,
                       leads: Sequence[str] = ("MLII",)) -> BeatDataset:
    """``load_beats`` with the model input features of set ``features`` (default: ``TrainConfig``'s, the one
    place the default lives), so every command that trains or scores a model on cached beats follows the same
    input contract as `foundation`, `simulate` and `fleet`."""
    base = TrainConfig()
    signal = signal or base.signal
    data = load_beats(data_dir, records, signal, cache_root, progress=progress, leads=leads)
    return with_feature_set(data, features or base.features, signal)
