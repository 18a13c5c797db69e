"""Labelled beats of many records as flat arrays, cached on disk per record and signal config."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from edge_runtime.beat_inputs import beat_inputs
from edge_runtime.signal_config import SignalConfig
from edge_runtime.aami import AAMI_CLASSES, aami_labels
from training.data.mitdb import load_record

log = logging.getLogger(__name__)
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class BeatDataset:
    """Row i is one beat: its window, RR features, AAMI label, record and R-peak sample."""

    waves: np.ndarray  # (n, window_length) float32
    rr: np.ndarray  # (n, n_rr) float32, unscaled
    labels: np.ndarray  # (n,) int8 index into AAMI_CLASSES
    record: np.ndarray  # (n,) str record name
    sample: np.ndarray  # (n,) int64 R-peak sample in the record

    def __len__(self) -> int:
        return int(self.labels.size)

    def subset(self, index: np.ndarray) -> "BeatDataset":
        return BeatDataset(*(a[index] for a in (self.waves, self.rr, self.labels, self.record, self.sample)))

    def of_records(self, records: Iterable[str]) -> "BeatDataset":
        return self.subset(np.flatnonzero(np.isin(self.record, list(records))))

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(AAMI_CLASSES))
        return {c: int(n) for c, n in zip(AAMI_CLASSES, counts)}

    @staticmethod
    def concat(parts: Sequence["BeatDataset"]) -> "BeatDataset":
        return BeatDataset(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                             ("waves", "rr", "labels", "record", "sample")))


def record_beats(data_dir: Path, name: str, cfg: SignalConfig) -> BeatDataset:
    """All AAMI-labelled beats of one record that have a full window and both RR neighbours.

    RR intervals are taken between consecutive labelled beats (non-beat annotations are skipped).
    """
    rec = load_record(data_dir, name)
    if rec.fs_hz != cfg.fs_hz:
        raise ValueError(f"record {name} is sampled at {rec.fs_hz} Hz but the config expects {cfg.fs_hz} Hz")
    labels, positions = aami_labels(list(rec.ann_symbol))
    peaks = rec.ann_sample[positions]
    inputs = beat_inputs(rec.signal_mv, peaks, cfg)
    k = inputs.beat_index
    return BeatDataset(
        waves=inputs.waves,
        rr=inputs.rr,
        labels=labels[k],
        record=np.full(k.size, name, dtype="<U8"),
        sample=peaks[k],
    )


def _cache_path(cache_root: Path, data_dir: Path, name: str, cfg: SignalConfig) -> tuple[Path, str]:
    dat = (data_dir / name).with_suffix(".dat")
    atr = (data_dir / name).with_suffix(".atr")
    st_d, st_a = dat.stat(), atr.stat()
    source_key = f"{_CACHE_FORMAT}:{st_d.st_size}:{st_d.st_mtime_ns}:{st_a.st_size}:{st_a.st_mtime_ns}"
    return cache_root / "beats" / cfg.digest() / f"{name}.npz", source_key


def load_beats(
    data_dir: Path,
    records: Sequence[str],
    cfg: SignalConfig,
    cache_root: Path | None = None,
    progress: bool = True,
) -> BeatDataset:
    """Beats of ``records`` (in that order); served from the cache when source files are unchanged."""
    parts = []
    for name in tqdm(records, desc="records", unit="rec", disable=not progress, leave=False):
        parts.append(_cached_record_beats(data_dir, name, cfg, cache_root))
    return BeatDataset.concat(parts)


def _cached_record_beats(data_dir: Path, name: str, cfg: SignalConfig, cache_root: Path | None) -> BeatDataset:
    if cache_root is None:
        return record_beats(data_dir, name, cfg)
    path, source_key = _cache_path(cache_root, Path(data_dir), name, cfg)
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if str(z["source_key"]) == source_key:
                return BeatDataset(z["waves"], z["rr"], z["labels"], z["record"], z["sample"])
        log.info("cache for record %s is stale; rebuilding", name)
    beats = record_beats(data_dir, name, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, waves=beats.waves, rr=beats.rr, labels=beats.labels, record=beats.record,
             sample=beats.sample, source_key=np.array(source_key))
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache entry
    return beats
