"""Labelled beats of many records as flat arrays, cached on disk per record and signal config."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from edge_runtime.beat_inputs import beat_inputs
from edge_runtime.signal_config import SignalConfig
from edge_runtime.aami import AAMI_CLASSES, aami_labels
from training.data.mitdb import OTHER_LEAD, load_record

log = logging.getLogger(__name__)
_CACHE_FORMAT = 1
_FIELDS = ("waves", "rr", "labels", "record", "sample", "lead")
LEAD_DTYPE = "<U12"


@dataclass(frozen=True)
class BeatDataset:
    """Row i is one beat: its window, RR features, AAMI label, record, R-peak sample and lead."""

    waves: np.ndarray  # (n, window_length) float32
    rr: np.ndarray  # (n, n_rr) float32, unscaled
    labels: np.ndarray  # (n,) int8 index into AAMI_CLASSES
    record: np.ndarray  # (n,) str record name
    sample: np.ndarray  # (n,) int64 R-peak sample in the record
    lead: np.ndarray | None = None  # (n,) str, one of LEADS; None means every beat is MLII

    def __post_init__(self) -> None:
        if self.lead is None:
            object.__setattr__(self, "lead", np.full(self.labels.size, "MLII", dtype=LEAD_DTYPE))

    def __len__(self) -> int:
        return int(self.labels.size)

    def subset(self, index: np.ndarray) -> "BeatDataset":
        return BeatDataset(*(getattr(self, f)[index] for f in _FIELDS))

    def of_records(self, records: Iterable[str]) -> "BeatDataset":
        return self.subset(np.flatnonzero(np.isin(self.record, list(records))))

    def of_leads(self, leads: Iterable[str]) -> "BeatDataset":
        return self.subset(np.flatnonzero(np.isin(self.lead, list(leads))))

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(AAMI_CLASSES))
        return {c: int(n) for c, n in zip(AAMI_CLASSES, counts)}

    @staticmethod
    def concat(parts: Sequence["BeatDataset"]) -> "BeatDataset":
        return BeatDataset(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


#: Leads a dataset can be built from: MIT-BIH's MLII and the record's other channel (``OTHER_LEAD``).
LEADS = ("MLII", OTHER_LEAD)


def record_beats(data_dir: Path, name: str, cfg: SignalConfig, lead: str = "MLII") -> BeatDataset:
    """All AAMI-labelled beats of one record's ``lead`` that have a full window and both RR neighbours.

    RR intervals are taken between consecutive labelled beats (non-beat annotations are skipped). Both
    leads use the same reference annotations: the beat positions and labels are the record's, only the
    waveform differs, so a second-lead beat is another single-lead example of the same input contract.
    """
    if lead not in LEADS:
        raise ValueError(f"lead must be one of {LEADS}, got {lead!r}")
    rec = load_record(data_dir, name, lead)
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
        lead=np.full(k.size, lead, dtype=LEAD_DTYPE),
    )


def _cache_path(cache_root: Path, data_dir: Path, name: str, cfg: SignalConfig, lead: str,
                variant: str) -> tuple[Path, str]:
    dat = (data_dir / name).with_suffix(".dat")
    atr = (data_dir / name).with_suffix(".atr")
    st_d, st_a = dat.stat(), atr.stat()
    source_key = f"{_CACHE_FORMAT}:{st_d.st_size}:{st_d.st_mtime_ns}:{st_a.st_size}:{st_a.st_mtime_ns}"
    folder = cache_root / "beats" / cfg.digest()
    if lead != "MLII":  # MLII entries keep their original place, so existing caches stay valid
        folder = folder / lead
    if variant:
        folder = folder / variant
    return folder / f"{name}.npz", source_key


def load_beats(
    data_dir: Path,
    records: Sequence[str],
    cfg: SignalConfig,
    cache_root: Path | None = None,
    progress: bool = True,
    leads: Sequence[str] = ("MLII",),
) -> BeatDataset:
    """Beats of ``records`` (in that order), lead by lead; served from the cache when source files are
    unchanged. With two leads every record appears twice; its beats keep the record name, so patient
    splits keep both leads of a patient on the same side."""
    parts = []
    for lead in leads:
        for name in tqdm(records, desc=f"records ({lead})", unit="rec", disable=not progress, leave=False):
            parts.append(cached_beats(data_dir, name, cfg, cache_root, lead, "",
                                      lambda: record_beats(data_dir, name, cfg, lead)))
    return BeatDataset.concat(parts)


def cached_beats(data_dir: Path, name: str, cfg: SignalConfig, cache_root: Path | None, lead: str, variant: str,
                 build: Callable[[], BeatDataset]) -> BeatDataset:
    """``build()``'s beats of one record's ``lead`` (``variant`` names a derived copy, "" for the clean
    beats), stored under the signal config's digest and rebuilt when the source files change."""
    if cache_root is None:
        return build()
    path, source_key = _cache_path(cache_root, Path(data_dir), name, cfg, lead, variant)
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if str(z["source_key"]) == source_key:
                tags = z["lead"] if "lead" in z.files else np.full(z["labels"].size, lead, dtype=LEAD_DTYPE)
                return BeatDataset(z["waves"], z["rr"], z["labels"], z["record"], z["sample"], tags)
        log.info("cache for record %s (%s %s) is stale; rebuilding", name, lead, variant)
    beats = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, waves=beats.waves, rr=beats.rr, labels=beats.labels, record=beats.record,
             sample=beats.sample, lead=beats.lead, source_key=np.array(source_key))
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache entry
    return beats
