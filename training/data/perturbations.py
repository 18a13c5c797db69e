"""Named, seeded perturbations of a raw ECG lead: what a wearable sees that MIT-BIH's MLII lead does not.

Each perturbation acts on one lead in physical units (mV) at its sampling rate and returns the new
signal, its rate, the reference beat samples mapped onto it, and the ranges where no beat can be scored
(a lead-off gap has no beats to find; an amplifier clipped at its rail has lost them). The robustness
suite scores detectors on them and the classifier uses them as augmentation, so they are plain
numpy/scipy and chosen by a short spec: ``perturbation("emg:6")``, ``perturbation("resample:250")``.

Noise levels follow the MIT-BIH Noise Stress Test convention (``nst``): the signal power is that of a
sine with the median QRS peak-to-peak amplitude, S = pp^2 / 8, and SNR = 10 log10(S / noise variance).
The noises are synthesized (the NSTDB recordings are not part of our data): muscle (EMG-like) is
band-limited Gaussian noise with a slowly varying envelope; electrode motion is low-frequency noise in
bursts with step-like transients, which overlaps the QRS band and is the hardest case, as in the NSTDB.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
from scipy import signal as sp_signal

#: The ADC rails of MIT-BIH's recorders (11 bits, 200 adu/mV around 1024): +-5.12 mV.
MITDB_RAIL_MV = 5.12
#: After an artefact ends, the front-end's 0.5 Hz high-pass still rings; beats there are not scored.
RECOVERY_S = 1.0


@dataclass(frozen=True)
class Perturbed:
    """A perturbed lead; ``excluded`` are [start, end) sample ranges (at ``fs_hz``) left out of scoring."""

    signal_mv: np.ndarray
    fs_hz: float
    ann_sample: np.ndarray
    excluded: tuple[tuple[int, int], ...] = field(default=())


class Perturbation(Protocol):
    name: str

    def apply(self, signal_mv: np.ndarray, fs_hz: float, ann_sample: np.ndarray, seed: int) -> Perturbed: ...


# ---------------------------------------------------------------------------------------------- helpers
def qrs_peak_to_peak(signal_mv: np.ndarray, fs_hz: float, ann_sample: np.ndarray | None = None) -> float:
    """Median peak-to-peak amplitude of the QRS complexes (+-60 ms around each annotated beat).

    Samples that are NaN (a lead-off gap) are ignored. Without annotations, the median over 1 s windows of the band-passed signal's range (every second
    of ECG holds a QRS at heart rates above 60 bpm)."""
    x = np.asarray(signal_mv, np.float64)
    half = max(1, int(round(0.06 * fs_hz)))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows of a lead-off gap
        if ann_sample is not None and len(ann_sample):
            starts = np.clip(np.asarray(ann_sample, np.int64) - half, 0, x.size)
            ranges = [np.nanmax(x[s:s + 2 * half]) - np.nanmin(x[s:s + 2 * half])
                      for s in starts if s + 2 * half <= x.size]
            if np.isfinite(ranges).any():
                return float(np.nanmedian(ranges))
        sos = sp_signal.butter(2, [5.0, min(30.0, 0.45 * fs_hz)], btype="bandpass", fs=fs_hz, output="sos")
        y = np.nan_to_num(x - np.nanmedian(x))
        y = sp_signal.sosfiltfilt(sos, y) if y.size > 30 else y
        n = max(1, int(fs_hz))
        ranges = [np.ptp(y[i:i + n]) for i in range(0, y.size - n + 1, n)] or [float(np.ptp(y))]
        return float(np.median(ranges))


def scale_to_snr(noise: np.ndarray, peak_to_peak_mv: float, snr_db: float) -> np.ndarray:
    """Scale ``noise`` so that 10 log10((pp^2 / 8) / var(noise)) equals ``snr_db`` (the nst convention)."""
    power = float(np.var(noise))
    if power <= 0:
        raise ValueError("noise has no power to scale")
    target = (peak_to_peak_mv ** 2 / 8.0) / (10.0 ** (snr_db / 10.0))
    return noise * np.sqrt(target / power)


def _band_noise(rng: np.random.Generator, n: int, fs_hz: float, lo: float, hi: float) -> np.ndarray:
    hi = min(hi, 0.45 * fs_hz)
    sos = sp_signal.butter(4, [lo, hi], btype="bandpass", fs=fs_hz, output="sos")
    return sp_signal.sosfilt(sos, rng.standard_normal(n + int(fs_hz)))[int(fs_hz):]


def _smooth_envelope(rng: np.random.Generator, n: int, fs_hz: float, cutoff_hz: float) -> np.ndarray:
    """A positive, slowly varying gain around 1 (bursts of muscle activity, episodes of motion)."""
    sos = sp_signal.butter(2, cutoff_hz, btype="lowpass", fs=fs_hz, output="sos")
    warm = int(10 * fs_hz / cutoff_hz)  # let the low-pass forget its zero start
    env = sp_signal.sosfilt(sos, rng.standard_normal(n + warm))[warm:]
    env = np.clip(env / (np.std(env) or 1.0), -2.0, 2.0)
    return np.exp(0.5 * env)


def _event_starts(rng: np.random.Generator, n: int, fs_hz: float, every_s: float, length_s: float) -> np.ndarray:
    """Start samples of events spread over the record: one per ``every_s`` seconds, jittered, none in the first 2 s."""
    count = max(1, int(n / fs_hz // every_s))
    span = n - int((length_s + 2 * RECOVERY_S) * fs_hz)
    first = int(2 * fs_hz)
    if span <= first:
        return np.zeros(0, np.int64)
    slots = np.linspace(first, span, count + 1)
    return np.sort(np.asarray([int(rng.uniform(a, b)) for a, b in zip(slots[:-1], slots[1:])], np.int64))


def _same(x: np.ndarray, fs_hz: float, ann: np.ndarray, excluded=()) -> Perturbed:
    return Perturbed(x, fs_hz, np.asarray(ann, np.int64).copy(), tuple(excluded))


def _param(value: str | None, default: float, what: str) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"{what}: parameter {value!r} is not a number") from exc


# ---------------------------------------------------------------------------------------------- perturbations
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
        return _same(np.asarray(signal_mv, np.float64) + self.offset_mv + settle, fs_hz, ann_sample)


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
        starts = _event_starts(rng, x.size, fs_hz, self.every_s, 0.0)
        offsets = rng.uniform(-self.max_mv, self.max_mv, starts.size)
        previous = 0.0
        for s, off in zip(starts, offsets):  # each step moves the offset to a new level within +-max_mv
            x[s:] += off - previous
            previous = off
        recover = int(RECOVERY_S * fs_hz)
        return _same(x, fs_hz, ann_sample, [(int(s), int(s) + recover) for s in starts])


@dataclass(frozen=True)
class Invert:
    """Inverted polarity (electrodes swapped, or a lead whose QRS points down)."""

    name: str = "invert"

    def apply(self, signal_mv, fs_hz, ann_sample, seed):
        return _same(-np.asarray(signal_mv, np.float64), fs_hz, ann_sample)


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
        return _same(np.asarray(signal_mv, np.float64) * self.factor, fs_hz, ann_sample)


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
class BaselineWander:
    """Respiration (0.15-0.4 Hz) and body movement (< 0.1 Hz) drift of ``amplitude_mv`` peak."""

    amplitude_mv: float = 2.0

    @property
    def name(self) -> str:
        return f"wander:{self.amplitude_mv:g}"

    def apply(self, signal_mv, fs_hz, ann_sample, seed):
        rng = np.random.default_rng(seed)
        n = len(signal_mv)
        t = np.arange(n) / fs_hz
        resp = np.sin(2 * np.pi * rng.uniform(0.15, 0.4) * t + rng.uniform(0, 2 * np.pi))
        slow = np.cumsum(rng.standard_normal(n)) / np.sqrt(fs_hz)  # a random walk, then low-passed
        sos = sp_signal.butter(2, 0.1, btype="lowpass", fs=fs_hz, output="sos")
        slow = sp_signal.sosfiltfilt(sos, slow - slow.mean()) if n > 15 else np.zeros(n)
        slow = slow / (np.max(np.abs(slow)) or 1.0)
        wander = self.amplitude_mv * (0.5 * resp + 0.5 * slow)
        return _same(np.asarray(signal_mv, np.float64) + wander, fs_hz, ann_sample)


@dataclass(frozen=True)
class Emg:
    """Muscle artefact: broadband (20-150 Hz) Gaussian noise in slow bursts, at ``snr_db``."""

    snr_db: float = 6.0

    @property
    def name(self) -> str:
        return f"emg:{self.snr_db:g}"

    def apply(self, signal_mv, fs_hz, ann_sample, seed):
        rng = np.random.default_rng(seed)
        n = len(signal_mv)
        noise = _band_noise(rng, n, fs_hz, 20.0, 150.0) * _smooth_envelope(rng, n, fs_hz, 0.5)
        pp = qrs_peak_to_peak(signal_mv, fs_hz, ann_sample)
        return _same(np.asarray(signal_mv, np.float64) + scale_to_snr(noise, pp, self.snr_db), fs_hz, ann_sample)


@dataclass(frozen=True)
class ElectrodeMotion:
    """Electrode motion: 0.5-12 Hz noise in episodes, with decaying step transients, at ``snr_db``.

    It lies in the QRS band, as real electrode-motion artefact does (the hardest NSTDB noise)."""

    snr_db: float = 6.0

    @property
    def name(self) -> str:
        return f"motion:{self.snr_db:g}"

    def apply(self, signal_mv, fs_hz, ann_sample, seed):
        rng = np.random.default_rng(seed)
        n = len(signal_mv)
        noise = _band_noise(rng, n, fs_hz, 0.5, 12.0) * _smooth_envelope(rng, n, fs_hz, 0.2)
        jolts = np.zeros(n)
        kernel_t = np.arange(int(0.4 * fs_hz)) / fs_hz
        kernel = np.exp(-kernel_t / 0.08)
        for s in rng.integers(0, n, max(1, int(n / fs_hz / 10))):  # one jolt every ~10 s
            k = kernel[: n - s]
            jolts[s:s + k.size] += rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 3.0) * k
        noise = noise / (np.std(noise) or 1.0) + jolts
        pp = qrs_peak_to_peak(signal_mv, fs_hz, ann_sample)
        return _same(np.asarray(signal_mv, np.float64) + scale_to_snr(noise, pp, self.snr_db), fs_hz, ann_sample)


@dataclass(frozen=True)
class Mains:
    """Power-line hum at ``freq_hz`` (50 or 60) with a third harmonic, ``amplitude_mv`` peak, slowly varying."""

    freq_hz: float = 50.0
    amplitude_mv: float = 0.5

    @property
    def name(self) -> str:
        return f"mains:{self.freq_hz:g}"

    def apply(self, signal_mv, fs_hz, ann_sample, seed):
        rng = np.random.default_rng(seed)
        n = len(signal_mv)
        t = np.arange(n) / fs_hz
        env = _smooth_envelope(rng, n, fs_hz, 0.05) if n > 15 else np.ones(n)
        env = env / np.max(env)
        phase = rng.uniform(0, 2 * np.pi)
        hum = np.sin(2 * np.pi * self.freq_hz * t + phase)
        if 3 * self.freq_hz < fs_hz / 2:
            hum = hum + 0.1 * np.sin(2 * np.pi * 3 * self.freq_hz * t + 3 * phase)
        return _same(np.asarray(signal_mv, np.float64) + self.amplitude_mv * env * hum, fs_hz, ann_sample)


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
        for s in _event_starts(rng, x.size, fs_hz, self.every_s, self.burst_s[1]):
            length = int(rng.uniform(*self.burst_s) * fs_hz)
            t = np.arange(length) / fs_hz
            swing = rng.choice([-1.0, 1.0]) * 4 * self.rail_mv * np.sin(np.pi * t / t[-1]) if length > 1 else 0.0
            x[s:s + length] += swing
            excluded.append((int(s), int(s + length + RECOVERY_S * fs_hz)))
        return _same(np.clip(x, -self.rail_mv, self.rail_mv), fs_hz, ann_sample, excluded)


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
        for s in _event_starts(rng, x.size, fs_hz, self.every_s, self.gap_s[1]):
            e = min(x.size, s + int(rng.uniform(*self.gap_s) * fs_hz))
            x[s:e] = {"flat": x[max(0, s - 1)], "rail": self.rail_mv, "nan": np.nan}[self.mode]
            excluded.append((int(s), int(e + RECOVERY_S * fs_hz)))
        return _same(x, fs_hz, ann_sample, excluded)


@dataclass(frozen=True)
class Identity:
    """No perturbation: the reference row of the suite."""

    name: str = "none"

    def apply(self, signal_mv, fs_hz, ann_sample, seed):
        return _same(np.asarray(signal_mv, np.float64), fs_hz, ann_sample)


# ---------------------------------------------------------------------------------------------- by name
_FACTORIES: dict[str, Callable[[str | None], Perturbation]] = {
    "none": lambda p: Identity(),
    "dc_start": lambda p: DcOffset(_param(p, 300.0, "dc_start")),
    "dc_steps": lambda p: DcSteps(_param(p, 300.0, "dc_steps")),
    "invert": lambda p: Invert(),
    "gain": lambda p: Gain(_param(p, 5.0, "gain")),
    "resample": lambda p: Resample(_param(p, 250.0, "resample")),
    "wander": lambda p: BaselineWander(_param(p, 2.0, "wander")),
    "emg": lambda p: Emg(_param(p, 6.0, "emg")),
    "motion": lambda p: ElectrodeMotion(_param(p, 6.0, "motion")),
    "mains": lambda p: Mains(_param(p, 50.0, "mains")),
    "saturation": lambda p: Saturation(rail_mv=_param(p, MITDB_RAIL_MV, "saturation")),
    "leadoff": lambda p: LeadOff(p or "flat"),
}

#: The suite's perturbation classes (each spec is one row of the robustness table).
SUITE: tuple[str, ...] = (
    "none", "dc_start:300", "dc_start:-300", "dc_steps:300", "invert", "gain:0.2", "gain:5",
    "resample:128", "resample:250", "resample:500", "wander:2",
    "emg:12", "emg:6", "emg:0", "motion:12", "motion:6", "motion:0",
    "mains:50", "mains:60", "saturation", "leadoff:flat", "leadoff:rail", "leadoff:nan",
)


def perturbation_names() -> list[str]:
    return sorted(_FACTORIES)


def perturbation(spec: str) -> Perturbation:
    """The perturbation a spec names: ``kind`` or ``kind:parameter`` (``emg:6``, ``gain:0.2``, ``leadoff:nan``)."""
    kind, _, param = spec.strip().partition(":")
    if kind not in _FACTORIES:
        raise ValueError(f"unknown perturbation {spec!r}; known kinds: {', '.join(perturbation_names())}")
    return _FACTORIES[kind](param or None)


def apply_chain(specs: list[str], signal_mv: np.ndarray, fs_hz: float, ann_sample: np.ndarray,
                seed: int) -> Perturbed:
    """Several perturbations in order (e.g. ``["gain:0.2", "emg:12"]``), each with its own derived seed;
    excluded ranges are carried through a resampling."""
    out = _same(np.asarray(signal_mv, np.float64), fs_hz, ann_sample)
    for i, spec in enumerate(specs):
        step = perturbation(spec).apply(out.signal_mv, out.fs_hz, out.ann_sample, seed * 1009 + i)
        ratio = step.fs_hz / out.fs_hz
        carried = tuple((int(a * ratio), int(np.ceil(b * ratio))) for a, b in out.excluded)
        out = Perturbed(step.signal_mv, step.fs_hz, step.ann_sample, carried + step.excluded)
    return out
