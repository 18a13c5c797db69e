"""Per-beat signal quality: is this stretch of signal fit to classify (and to raise an alert on)?

Three checks, each from what the stream already computes, combined into one index in [0, 1] that travels
with every beat (``BeatQuality``); a beat below ``usable_from`` is labelled Q (unclassifiable) by the runtime
and never starts an alert:

- contact: the share of flat samples (each within ``flat_mv`` of its predecessor for ``flat_window_s``: a
  lead off, an amplifier clipped at its rail, invalid samples held) in the last ``contact_s`` seconds and
  in the beat's RR interval (whose RR features a gap would falsify). ECG is never flat for long; contact =
  1 - 2 x the larger share (0 when half the stretch is flat).
- detector SNR: the R-peak detector's own signal and noise peak levels (Pan & Tompkins' SPK and NPK, in
  energy); their ratio is mapped from ``snr_floor`` (0) to ``snr_good`` (1) on a log scale.
- morphology: each beat's best correlation with the ``template_beats`` beats before it (an ectopic beat
  matches the earlier ectopic beats, so runs of PVCs keep their quality; noise matches nothing); the median
  over the last ``morphology_beats`` beats, mapped from ``corr_floor`` (0) to ``corr_good`` (1).

The index is the smallest of the three; the reason names it. Lead-off and poor-signal time are counted
for the device status. Pure numpy, bounded memory, and the same result however the stream is chunked.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from edge_runtime.filtering import still_run
from edge_runtime.sample_history import SampleHistory


#: Flat flags are kept this long: a beat's RR interval after a lead-off gap reaches that far back.
HISTORY_S = 30.0


@dataclass(frozen=True)
class QualityConfig:
    flat_mv: float = 0.002  # below one step of a 200 adu/mV ADC: truly unchanged samples
    flat_window_s: float = 0.1
    contact_s: float = 2.0
    snr_floor: float = 1.5
    snr_good: float = 6.0
    template_beats: int = 8
    morphology_beats: int = 5
    corr_floor: float = 0.5
    corr_good: float = 0.8
    usable_from: float = 0.5

    def __post_init__(self) -> None:
        if self.flat_mv < 0 or self.flat_window_s <= 0 or self.contact_s <= 0:
            raise ValueError("flat_mv must be >= 0, flat_window_s and contact_s positive")
        if not 1 <= self.snr_floor < self.snr_good or not -1 <= self.corr_floor < self.corr_good <= 1:
            raise ValueError("need 1 <= snr_floor < snr_good and -1 <= corr_floor < corr_good <= 1")
        if self.template_beats < 1 or self.morphology_beats < 1 or not 0 < self.usable_from <= 1:
            raise ValueError("template_beats, morphology_beats >= 1 and 0 < usable_from <= 1")


@dataclass(frozen=True)
class BeatQuality:
    index: float  # 0 (unusable) .. 1 (clean)
    usable: bool
    reason: str  # the weakest check: "contact", "snr", "morphology" (or "ok")
    contact: float
    snr: float
    morphology: float


def _ramp(value: float, floor: float, good: float) -> float:
    return min(1.0, max(0.0, (value - floor) / (good - floor)))


class SignalQuality:
    """Fed the raw (invalid samples held) and the detector's levels; ``assess`` scores one beat."""

    def __init__(self, fs_hz: float, cfg: QualityConfig = QualityConfig()) -> None:
        self.cfg, self.fs_hz = cfg, fs_hz
        self._w = max(2, int(round(cfg.flat_window_s * fs_hz)))
        self._previous: float | None = None
        self._run = 0
        self._flat = SampleHistory()  # 1.0 where the signal is flat, by absolute sample index
        self._waves = np.zeros((cfg.template_beats, 0))  # unit-norm waves of the last beats, a ring
        self._n_waves = 0
        self._corr: deque[float] = deque(maxlen=cfg.morphology_beats)
        self.flat_samples = 0
        self._last_flat = -1  # absolute index of the newest flat sample (clean ECG never looks at the flags)
        self.poor_s = 0.0

    @property
    def lead_off_s(self) -> float:
        return self.flat_samples / self.fs_hz

    def process(self, raw: np.ndarray) -> None:
        """A chunk of raw samples (after the invalid-sample guard), in stream order."""
        x = np.asarray(raw, np.float64)
        if x.size == 0:
            return
        run = still_run(x, self._previous, self._run, self.cfg.flat_mv)
        self._previous, self._run = float(x[-1]), int(run[-1])
        flat = (run >= self._w).astype(np.float64)
        n_flat = int(flat.sum())
        if n_flat:
            self.flat_samples += n_flat
            self._last_flat = self._flat.end + int(np.flatnonzero(flat)[-1])
        self._flat.append(flat)

    def flat_seconds(self, lo: int, hi: int) -> float:
        """Seconds of flat signal in samples [lo, hi) (as far back as the flags are kept)."""
        if self._last_flat < lo:
            return 0.0
        return float(self._flat.window(lo, hi).sum()) / self.fs_hz

    def trim(self, keep_from: int) -> None:
        """Forget flags before ``keep_from`` less ``HISTORY_S`` (the RR interval of a beat after a long gap)."""
        self._flat.trim(keep_from - int(round(HISTORY_S * self.fs_hz)))

    def assess(self, sample: int, wave: np.ndarray, levels: tuple[float, float] | None, rr_s: float) -> BeatQuality:
        """The beat at ``sample`` with its model window and the detector's (signal, noise) levels now."""
        cfg = self.cfg
        shares = [0.0]
        for span_s in (cfg.contact_s, rr_s):
            lo = sample - int(round(span_s * self.fs_hz))
            if self._last_flat >= lo:
                flat = self._flat.window(lo, sample + 1)
                shares.append(float(flat.sum()) / flat.size if flat.size else 0.0)
        contact = max(0.0, 1.0 - 2.0 * max(shares))
        if levels is None or levels[0] <= 0:
            snr = 0.0
        else:
            ratio = levels[0] / max(levels[1], 1e-12 * levels[0])
            snr = _ramp(math.log(ratio), math.log(cfg.snr_floor), math.log(cfg.snr_good))
        w = np.asarray(wave, np.float64)
        w = w - w.mean()
        norm = float(np.sqrt(w @ w))
        w = w / norm if norm > 0 else w
        if self._waves.shape[1] != w.size:
            self._waves = np.zeros((cfg.template_beats, w.size))
        n = min(self._n_waves, cfg.template_beats)
        best = float(np.max(self._waves[:n] @ w, initial=0.0))
        self._waves[self._n_waves % cfg.template_beats] = w
        self._n_waves += 1
        self._corr.append(best)
        # until enough beats are in, nothing vouches for the morphology (the first beats are not classified)
        morphology = _ramp(sorted(self._corr)[len(self._corr) // 2], cfg.corr_floor, cfg.corr_good) \
            if len(self._corr) == cfg.morphology_beats else 0.0
        parts = {"contact": contact, "snr": snr, "morphology": morphology}
        reason = min(parts, key=parts.get)
        index = parts[reason]
        usable = index >= cfg.usable_from
        if not usable:
            self.poor_s += rr_s
        return BeatQuality(index, usable, reason if not usable else "ok", contact, snr, morphology)
