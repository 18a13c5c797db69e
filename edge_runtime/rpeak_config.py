"""The R-peak detector's configuration: its QRS filter design and every time constant and ratio of its decisions.

Kept apart from the streaming decisions (``rpeak.py``) because two consumers read it: the Python detector
and the firmware code generator (``training/codegen/frontend.py``), which turns it into the C detector's
``PW_RP_*`` constants, so both detectors follow one definition.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal as sp_signal


@dataclass(frozen=True)
class DetectorConfig:
    fs_hz: float = 360.0
    qrs_band_hz: tuple[float, float] = (5.0, 15.0)
    integration_s: float = 0.150
    refractory_s: float = 0.200
    #: A candidate this soon after a QRS must have at least half its slope, or it is a T wave.
    t_wave_s: float = 0.360
    #: Search back for a missed beat after this many average RR intervals without one.
    searchback_rr: float = 1.66
    learning_s: float = 2.0
    #: The R peak is searched in this window (seconds) relative to the integrated-signal peak.
    r_search_s: tuple[float, float] = (-0.25, 0.0)
    #: A candidate above this many times the signal level is an artefact (energy: x10 in amplitude).
    artefact_ratio: float = 100.0
    #: After an artefact, candidates are ignored this long before re-learning starts.
    artefact_blank_s: float = 0.5
    #: Artefacts met while re-learning restart it, at most this many times (then they are the new signal).
    artefact_restarts: int = 4
    #: No candidate at all for this long: the input was flat (lead off, clipped at a rail, invalid samples
    #: held); the levels are learned again once it moves (real ECG has a local energy maximum every beat).
    flat_s: float = 1.0
    #: Re-learn the levels after this long without a beat (search-back included).
    relearn_s: float = 5.0
    #: Integrated-signal maxima below this (mV^2/s^2 scale; a QRS at x0.1 gain is ~1000 times more) are no
    #: candidates: a flat input decays to rounding noise, which must not teach the detector a level.
    min_height: float = 1e-3
    #: Power-line frequencies notched out of the QRS band (those below fs/2).
    mains_hz: tuple[float, ...] = (50.0, 60.0)
    mains_q: float = 10.0
    #: Butterworth order of the QRS band-pass (the C detector takes its sections from ``qrs_sos``). Pan &
    #: Tompkins' first order stays the default: on DS1 the second order halves the false beats on MLII and on
    #: 12 dB EMG but loses beats under baseline wander, electrode motion and on the second channel
    #: (docs/robustness.md has the numbers).
    qrs_order: int = 1
    #: A first-order low-pass (Hz) after the QRS band-pass, or None: muscle noise (20-150 Hz) passes the
    #: first-order band's slow upper skirt and the derivative then amplifies it; one more pole at 20 Hz cuts
    #: it without the second-order band's losses under electrode motion and baseline wander.
    qrs_lowpass_hz: float | None = 20.0
    #: threshold1 = NPK + this x (SPK - NPK) (Pan & Tompkins: 0.25).
    threshold_fraction: float = 0.25
    #: Weight of a noise peak above the noise level in its running estimate (Pan & Tompkins: 0.125, the same
    #: as below it). A larger weight lifts the noise level quickly inside a burst of noise, so the burst's
    #: peaks stop reaching threshold1; it still decays at 0.125 once the burst is over.
    noise_attack: float = 0.375
    #: The QRS-shape test in noise (None: off): while the noise level exceeds ``crest_when`` x the signal level,
    #: a candidate above threshold 1 but not above the signal level counts as noise when its crest factor
    #: (largest squared slope in its integration window / the window's mean squared slope) is below
    #: ``min_crest``: a QRS is narrow (crest ~5-7 on DS1), a motion hump or a V1 T wave broad (~3); large
    #: candidates (wide PVCs) are never tested. It stays a search-back candidate. Chosen on DS1.
    min_crest: float | None = 4.0
    crest_when: float = 0.1875

    def __post_init__(self) -> None:
        lo, hi = self.qrs_band_hz
        if not 0 < lo < hi < self.fs_hz / 2:
            raise ValueError(f"QRS band {self.qrs_band_hz} must lie inside (0, fs/2 = {self.fs_hz / 2})")
        if self.r_search_s[0] >= self.r_search_s[1]:
            raise ValueError("r_search_s must be (start, end) with start < end")
        if self.artefact_ratio <= 1 or self.artefact_restarts < 1:
            raise ValueError("artefact_ratio must exceed 1 and artefact_restarts be at least 1")
        if self.relearn_s <= self.learning_s:
            raise ValueError(f"relearn_s ({self.relearn_s}) must exceed learning_s ({self.learning_s})")
        if self.min_height < 0:
            raise ValueError(f"min_height must be >= 0, got {self.min_height}")
        if self.qrs_lowpass_hz is not None and not self.qrs_band_hz[1] <= self.qrs_lowpass_hz < self.fs_hz / 2:
            raise ValueError(f"qrs_lowpass_hz {self.qrs_lowpass_hz} must lie in [{self.qrs_band_hz[1]}, fs/2)")
        if self.qrs_order not in (1, 2):
            raise ValueError(f"qrs_order must be 1 or 2, got {self.qrs_order}")
        if not (0 < self.threshold_fraction < 1 and 0 < self.noise_attack <= 1):
            raise ValueError("threshold_fraction must lie in (0, 1) and noise_attack in (0, 1]")
        if (self.min_crest is not None and self.min_crest <= 0) or not 0 <= self.crest_when <= 1:
            raise ValueError("min_crest must be positive (or None) and crest_when lie in [0, 1]")
        if any(f <= 0 for f in self.mains_hz) or self.mains_q <= 0:
            raise ValueError("mains_hz must be positive frequencies and mains_q positive")

    def qrs_sos(self) -> np.ndarray:
        """The QRS filter: a 5-15 Hz Butterworth band-pass of ``qrs_order``, the optional first-order low-pass,
        then a notch at each mains frequency below fs/2."""
        sections = [sp_signal.butter(self.qrs_order, self.qrs_band_hz, btype="bandpass", fs=self.fs_hz, output="sos")]
        if self.qrs_lowpass_hz is not None:
            sections.append(sp_signal.butter(1, self.qrs_lowpass_hz, fs=self.fs_hz, output="sos"))
        for f in self.mains_hz:
            if f < 0.45 * self.fs_hz:
                b, a = sp_signal.iirnotch(f, self.mains_q, fs=self.fs_hz)
                sections.append(sp_signal.tf2sos(b, a))
        return np.concatenate(sections)

    def samples(self, seconds: float) -> int:
        return max(1, round(seconds * self.fs_hz))
