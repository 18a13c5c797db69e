"""Perturbations of the lead itself rather than added noise: electrode offsets and steps, swapped polarity,
another gain or sampling rate, an amplifier clipped at its rails, the electrode off, and no change at all."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal as sp_signal

from training.data.perturbed import MITDB_RAIL_MV, RECOVERY_S, Perturbed, event_starts, keep_timing


@dataclass(frozen=True)
class DcOffset:
    """A constant electrode offset from the first sample on (half-cell potentials reach hundreds of mV),
    plus a slow exponential settling of a tenth of it (the electrode polarises in the first seconds)."""

    offset_mv: float = 300.0

    @property
    def name(self) -> str:
        return f"dc_start:{self.offset_mv:g}"

    def apply(self, signal_mv, fs_hz, ann_sample, seed):
        t = np.arange(len(signal_mv)) / fs_hz
        settle = 0.1 * self.offset_mv * np.exp(-t / 5.0)
        return keep_timing(np.asarray(signal_mv, np.float64) + self.offset_mv + settle, fs_hz, ann_sample)


@dataclass(frozen=True)
class DcSteps:
    """Steps of up to +-``max_mv`` every ~``every_s`` seconds (an electrode re-attached, a cable moved)."""

    max_mv: float = 300.0
    every_s: float = 120.0

    @property
    def name(self) -> str:
        return f"dc_steps:{self.max_mv:g}"

    def apply(self, signal_mv, fs_hz, ann_sample, seed):
        rng = np.random.default_rng(seed)
        x = np.asarray(signal_mv, np.float64).copy()
        starts = event_starts(rng, x.size, fs_hz, self.every_s, 0.0)
        offsets = rng.uniform(-self.max_mv, self.max_mv, starts.size)
        previous = 0.0
        for s, off in zip(starts, offsets):  # each step moves the offset to a new level within +-max_mv
            x[s:] += off - previous
            previous = off
        recover = int(RECOVERY_S * fs_hz)
        return keep_timing(x, fs_hz, ann_sample, [(int(s), int(s) + recover) for s in starts])


@dataclass(frozen=True)
class Invert:
    """Inverted polarity (electrodes swapped, or a lead whose QRS points down)."""

    name: str = "invert"

    def apply(self, signal_mv, fs_hz, ann_sample, seed):
        return keep_timing(-np.asarray(signal_mv, np.float64), fs_hz, ann_sample)


@dataclass(frozen=True)
class Gain:
    """Another amplifier gain or electrode spacing: every sample times ``factor``."""

    factor: float = 5.0

    def __post_init__(self) -> None:
        if not self.factor > 0:
            raise ValueError(f"gain factor must be positive, got {self.factor}")

    @property
    def name(self) -> str:
        return f"gain:{self.factor:g}"

    def apply(self, signal_mv, fs_hz, ann_sample, seed):
        return keep_timing(np.asarray(signal_mv, np.float64) * self.factor, fs_hz, ann_sample)


@dataclass(frozen=True)
class Resample:
    """Another sampling rate (polyphase, anti-aliased); annotations move to the nearest new sample."""

    fs_out_hz: float = 250.0

    def __post_init__(self) -> None:
        if not 50 <= self.fs_out_hz <= 4000:
            raise ValueError(f"resample target {self.fs_out_hz} Hz is outside 50-4000 Hz")

    @property
    def name(self) -> str:
        return f"resample:{self.fs_out_hz:g}"

    def apply(self, signal_mv, fs_hz, ann_sample, seed):
        from fractions import Fraction

        ratio = Fraction(self.fs_out_hz / fs_hz).limit_denominator(1000)
        y = sp_signal.resample_poly(np.asarray(signal_mv, np.float64), ratio.numerator, ratio.denominator,
                                    padtype="line")
        fs_new = fs_hz * ratio.numerator / ratio.denominator
        ann = np.round(np.asarray(ann_sample, np.float64) * fs_new / fs_hz).astype(np.int64)
        return Perturbed(y, fs_new, np.clip(ann, 0, max(0, y.size - 1)), ())


@dataclass(frozen=True)
class Saturation:
    """Bursts that drive the amplifier into its ADC rails (a knock on the electrode): the signal swings by
    several times the rail and is clipped at +-``rail_mv``; beats inside a burst are not scored."""

    rail_mv: float = MITDB_RAIL_MV
    every_s: float = 60.0
    burst_s: tuple[float, float] = (0.5, 3.0)

    @property
    def name(self) -> str:
        return "saturation"

    def apply(self, signal_mv, fs_hz, ann_sample, seed):
        rng = np.random.default_rng(seed)
        x = np.asarray(signal_mv, np.float64).copy()
        excluded = []
        for s in event_starts(rng, x.size, fs_hz, self.every_s, self.burst_s[1]):
            length = int(rng.uniform(*self.burst_s) * fs_hz)
            t = np.arange(length) / fs_hz
            swing = rng.choice([-1.0, 1.0]) * 4 * self.rail_mv * np.sin(np.pi * t / t[-1]) if length > 1 else 0.0
            x[s:s + length] += swing
            excluded.append((int(s), int(s + length + RECOVERY_S * fs_hz)))
        return keep_timing(np.clip(x, -self.rail_mv, self.rail_mv), fs_hz, ann_sample, excluded)


@dataclass(frozen=True)
class LeadOff:
    """Electrode off for 2-10 s every ~``every_s`` seconds: the lead reads ``flat`` (the last value),
    ``rail`` (the front-end pins to its positive rail, as an AD8232 does) or ``nan`` (invalid samples)."""

    mode: str = "flat"
    every_s: float = 90.0
    gap_s: tuple[float, float] = (2.0, 10.0)
    rail_mv: float = MITDB_RAIL_MV

    def __post_init__(self) -> None:
        if self.mode not in ("flat", "rail", "nan"):
            raise ValueError(f"lead-off mode {self.mode!r}: choose flat, rail or nan")

    @property
    def name(self) -> str:
        return f"leadoff:{self.mode}"

    def apply(self, signal_mv, fs_hz, ann_sample, seed):
        rng = np.random.default_rng(seed)
        x = np.asarray(signal_mv, np.float64).copy()
        excluded = []
        for s in event_starts(rng, x.size, fs_hz, self.every_s, self.gap_s[1]):
            e = min(x.size, s + int(rng.uniform(*self.gap_s) * fs_hz))
            x[s:e] = {"flat": x[max(0, s - 1)], "rail": self.rail_mv, "nan": np.nan}[self.mode]
            excluded.append((int(s), int(e + RECOVERY_S * fs_hz)))
        return keep_timing(x, fs_hz, ann_sample, excluded)


@dataclass(frozen=True)
class Identity:
    """No perturbation: the reference row of the suite."""

    name: str = "none"

    def apply(self, signal_mv, fs_hz, ann_sample, seed):
        return keep_timing(np.asarray(signal_mv, np.float64), fs_hz, ann_sample)
