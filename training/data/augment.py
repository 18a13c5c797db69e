"""Training beats from perturbed recordings: the noise, wander and placement a wearable sees.

A whole lead is perturbed (``training.data.perturbations``) and then goes through the one input
pipeline (``beat_inputs``) at the reference beat positions, so an augmented beat is exactly what the
device would compute from that noisy signal: filter transients, amplitude scaling and clipping
included. Beats inside a perturbation's excluded ranges are dropped. Copies are cached like clean
beats, keyed by lead, chain and seed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edge_runtime.aami import aami_labels
from edge_runtime.beat_inputs import beat_inputs
from edge_runtime.signal_config import SignalConfig
from training.data.beat_dataset import LEAD_DTYPE, BeatDataset, cached_beats
from training.data.mitdb import load_record
from training.data.perturbations import apply_chain

#: Suffix of the lead tag of augmented rows ("MLII/aug"): never validated or tested on.
AUG_SUFFIX = "/aug"
#: Perturbation chains drawn per (record, lead): realistic ambulatory noise at moderate SNR and a
#: baseline that moves. Lead-off, saturation and resampling are left out: their beats are not scored,
#: or the device resamples to the model rate before the model sees them.
DEFAULT_CHAINS: tuple[tuple[str, ...], ...] = (
    ("wander:1", "emg:12"),
    ("wander:2", "motion:12"),
    ("emg:6",),
    ("dc_steps:300", "mains:50"),
)


def chain_for(name: str, lead: str, seed: int, chains: Sequence[tuple[str, ...]] = DEFAULT_CHAINS) -> tuple[str, ...]:
    """The chain a (record, lead, seed) gets: fixed, so caches and reruns agree, and spread evenly over
    consecutive record numbers and over the two leads of a record."""
    number = int("".join(c for c in name if c.isdigit()) or 0)
    return tuple(chains[(number + (lead != "MLII") * 2 + seed) % len(chains)])


def perturbed_record_beats(data_dir: Path, name: str, cfg: SignalConfig, lead: str, chain: Sequence[str],
                           seed: int) -> BeatDataset:
    """The beats of one record's lead after ``chain``; lead tag ``lead + AUG_SUFFIX``."""
    rec = load_record(data_dir, name, lead)
    labels, positions = aami_labels(list(rec.ann_symbol))
    out = apply_chain(list(chain), rec.signal_mv, rec.fs_hz, rec.ann_sample, seed)
    if out.fs_hz != cfg.fs_hz:
        raise ValueError(f"augmentation chain {chain} changed the rate to {out.fs_hz} Hz; the model needs {cfg.fs_hz}")
    peaks = out.ann_sample[positions]
    inputs = beat_inputs(out.signal_mv, peaks, cfg)
    k = inputs.beat_index
    keep = np.ones(k.size, bool)
    for a, b in out.excluded:
        keep &= ~((peaks[k] >= a) & (peaks[k] < b))
    k = k[keep]
    return BeatDataset(waves=inputs.waves[keep], rr=inputs.rr[keep], labels=labels[k],
                       record=np.full(k.size, name, dtype="<U8"), sample=peaks[k],
                       lead=np.full(k.size, lead + AUG_SUFFIX, dtype=LEAD_DTYPE))


def load_augmented(data_dir: Path, records: Sequence[str], cfg: SignalConfig, leads: Sequence[str], seed: int,
                   cache_root: Path | None = None) -> BeatDataset:
    """One perturbed copy of every (record, lead), each with its own chain from ``chain_for``."""
    parts = []
    for lead in leads:
        for name in records:
            chain = chain_for(name, lead, seed)
            key = f"aug-{seed}-" + "+".join(chain).replace(":", "_")
            parts.append(cached_beats(data_dir, name, cfg, cache_root, lead, key,
                                      lambda: perturbed_record_beats(data_dir, name, cfg, lead, chain, seed)))
    return BeatDataset.concat(parts)
