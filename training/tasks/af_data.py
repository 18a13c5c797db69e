"""MIT-BIH rhythm annotations as AF/flutter windows of the R-peak stream, cached per record.

Every beat inherits the rhythm in force at its annotation (``aux_note`` of the "+" rhythm-change annotations:
"(AFIB", "(AFL", "(N", ...). A window of ``window`` RR intervals is AF when at least half of its intervals end
in an AF or flutter beat. Its decision covers the ``hop`` beats around its centre, so consecutive windows tile
the record and the device reports the same onset time as this evaluation (the window's centre, not the moment
it completes).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from edge_runtime.aami import aami_class
from edge_runtime.af_features import (
    FEATURE_NAMES,
    check_rr,
    window_features,
    window_starts,
)
from edge_runtime.atrial_activity import (
    MIN_NORMAL_BEATS,
    P_CONSISTENT,
    P_SEGMENT,
    TEMPLATE_ALPHA,
    beat_activity,
)
from edge_runtime.beat_windows import beat_windows
from edge_runtime.filtering import bandpass
from edge_runtime.qrs_morphology import (
    QRS_ALPHA,
    QRS_END,
    QRS_MATCH,
    QRS_RESET,
    QRS_START,
)
from edge_runtime.signal_config import SignalConfig
from training.data.mitdb import load_record

log = logging.getLogger(__name__)

#: Rhythm annotations counted as AF (EC57 treats flutter with fibrillation for the AF measures).
AF_RHYTHMS = ("(AFIB", "(AFL")


@dataclass(frozen=True)
class RecordRhythm:
    """Beats of one record and the reference AF episodes, in seconds."""

    name: str
    beat_s: np.ndarray  # beat times
    beat_af: np.ndarray  # bool: the beat lies in an AF/flutter rhythm
    episodes: tuple[tuple[float, float], ...]  # reference AF episodes [start, end)
    duration_s: float
    beat_p: np.ndarray  # per beat: P-wave correlation with the running template (``atrial_activity``)
    beat_normal: np.ndarray  # per beat: the dominant QRS (``qrs_morphology``)


@dataclass(frozen=True)
class RecordWindows:
    """Feature rows of one record's windows and the time span each decision covers."""

    features: np.ndarray  # (n, len(FEATURE_NAMES)) float32
    targets: np.ndarray  # (n,) int64, 1 = AF
    span_s: np.ndarray  # (n, 2) start/end of the beats each decision covers


def rhythm_of(name: str, beat_sample: np.ndarray, symbols: np.ndarray, aux: np.ndarray, ann_sample: np.ndarray,
              fs_hz: float, n_samples: int, beat_p: np.ndarray, beat_normal: np.ndarray) -> RecordRhythm:
    """Beat times, per-beat AF flag and AF episodes from one record's annotations."""
    changes = [(int(s), str(a).rstrip("\x00")) for s, sym, a in zip(ann_sample, symbols, aux) if sym == "+" and a]
    episodes: list[tuple[float, float]] = []
    start: int | None = None
    for sample, rhythm in changes:
        is_af = rhythm in AF_RHYTHMS
        if is_af and start is None:
            start = sample
        elif not is_af and start is not None:
            episodes.append((start / fs_hz, sample / fs_hz))
            start = None
    if start is not None:
        episodes.append((start / fs_hz, n_samples / fs_hz))
    beat_s = beat_sample / fs_hz
    beat_af = np.zeros(beat_s.size, dtype=bool)
    for a, b in episodes:
        beat_af |= (beat_s >= a) & (beat_s < b)
    return RecordRhythm(name, beat_s, beat_af, tuple(episodes), n_samples / fs_hz, np.asarray(beat_p, np.float64),
                        np.asarray(beat_normal, bool))


def annotated_waves(signal_mv: np.ndarray, fs_hz: float, beat_sample: np.ndarray,
                    cfg: SignalConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The beat windows the device's beat stream cuts, at the given beats: the record band-passed as a stream would
    be (resampled to the stream's rate first if needed). Returns ``(waves, index of the beat of each window)``;
    beats too close to the record's ends have no window."""
    cfg = cfg or SignalConfig()
    x = np.asarray(signal_mv, np.float64)
    samples = np.asarray(beat_sample, np.float64)
    if fs_hz != cfg.fs_hz:
        ratio = Fraction(cfg.fs_hz / fs_hz).limit_denominator(1000)
        x = resample_poly(x, ratio.numerator, ratio.denominator)
        samples = samples * cfg.fs_hz / fs_hz
    return beat_windows(bandpass(x, cfg), np.round(samples).astype(np.int64), cfg)


def beat_atrial_activity(signal_mv: np.ndarray, fs_hz: float, beat_sample: np.ndarray) -> tuple[np.ndarray,
                                                                                                 np.ndarray]:
    """Per-beat P-wave correlations and normal-QRS flags (``atrial_activity.beat_activity``) on
    ``annotated_waves``; a beat without a window gets 0 and not normal (nothing seen), as in ``AfMonitor``."""
    waves, index = annotated_waves(signal_mv, fs_hz, beat_sample)
    corr, normal = np.zeros(len(beat_sample), np.float64), np.zeros(len(beat_sample), bool)
    corr[index], normal[index] = beat_activity(waves)
    return corr, normal


def record_rhythm(data_dir: Path, name: str) -> RecordRhythm:
    rec = load_record(Path(data_dir), name)
    beats = np.asarray([aami_class(str(s)) is not None for s in rec.ann_symbol])
    beat_p, beat_normal = beat_atrial_activity(rec.signal_mv, rec.fs_hz, rec.ann_sample[beats])
    return rhythm_of(name, rec.ann_sample[beats], rec.ann_symbol, rec.ann_aux, rec.ann_sample, rec.fs_hz,
                     rec.signal_mv.size, beat_p, beat_normal)


def windows_of(beat_s: np.ndarray, beat_af: np.ndarray, beat_p: np.ndarray, beat_normal: np.ndarray, window: int,
               hop: int) -> RecordWindows:
    """Windows over beat times, P-wave correlations and normal-QRS flags (and their AF flags, for the targets)."""
    rr = check_rr(np.diff(beat_s)) if beat_s.size > 1 else np.zeros(0)
    p_rr = np.asarray(beat_p, np.float64)[1:]  # the beat ending each RR interval
    normal_rr = np.asarray(beat_normal, bool)[1:]
    starts = window_starts(rr.size, window, hop)
    feats = np.stack([window_features(rr[s:s + window], p_rr[s:s + window], normal_rr[s:s + window]) for s in starts]) if starts.size \
        else np.zeros((0, len(FEATURE_NAMES)), np.float32)
    af_rr = beat_af[1:].astype(np.float64)
    targets = np.array([af_rr[s:s + window].mean() >= 0.5 for s in starts], dtype=np.int64)
    centre = starts + window // 2  # RR index at the window's centre
    lo = np.clip(centre - hop // 2, 0, beat_s.size - 1)
    hi = np.clip(centre + hop - hop // 2, 0, beat_s.size - 1)
    return RecordWindows(feats.astype(np.float32), targets, np.stack([beat_s[lo], beat_s[hi]], axis=1)
                         if starts.size else np.zeros((0, 2)))


def cached_windows(data_dir: Path, name: str, window: int, hop: int, cache_root: Path | None) -> tuple[RecordRhythm,
                                                                                                       RecordWindows]:
    """``record_rhythm`` + ``windows_of``, from an on-disk cache keyed by the annotation file and parameters."""
    path = None
    if cache_root is not None:
        atr = Path(data_dir) / f"{name}.atr"
        key = hashlib.sha256(f"{atr.stat().st_size}:{atr.stat().st_mtime_ns}:{window}:{hop}:{FEATURE_NAMES}:"
                             f"{P_SEGMENT}:{TEMPLATE_ALPHA}:{P_CONSISTENT}:{MIN_NORMAL_BEATS}:{QRS_START}:{QRS_END}:"
                             f"{QRS_MATCH}:{QRS_ALPHA}:{QRS_RESET}"
                             .encode()).hexdigest()[:16]
        path = Path(cache_root) / "af" / f"{name}-{key}.npz"
        if path.is_file():
            z = np.load(path)
            rhythm = RecordRhythm(name, z["beat_s"], z["beat_af"], tuple(map(tuple, z["episodes"].tolist())),
                                  float(z["duration_s"]), z["beat_p"], z["beat_normal"])
            return rhythm, RecordWindows(z["features"], z["targets"], z["span_s"])
    rhythm = record_rhythm(data_dir, name)
    wins = windows_of(rhythm.beat_s, rhythm.beat_af, rhythm.beat_p, rhythm.beat_normal, window, hop)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, beat_s=rhythm.beat_s, beat_af=rhythm.beat_af,
                 episodes=np.asarray(rhythm.episodes, np.float64).reshape(-1, 2), duration_s=rhythm.duration_s,
                 beat_p=rhythm.beat_p, beat_normal=rhythm.beat_normal,
                 features=wins.features, targets=wins.targets, span_s=wins.span_s)
        tmp.replace(path)  # atomic: a killed run never leaves half a cache entry
    return rhythm, wins
