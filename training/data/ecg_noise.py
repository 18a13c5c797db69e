"""Synthesized noise on a raw ECG lead: baseline wander, muscle (EMG-like), electrode motion and mains hum.

Noise levels follow the MIT-BIH Noise Stress Test convention (``nst``): the signal power is that of a
sine with the median QRS peak-to-peak amplitude, S = pp^2 / 8, and SNR = 10 log10(S / noise variance).
The noises are synthesized (the NSTDB recordings are not part of our data): muscle (EMG-like) is
band-limited Gaussian noise with a slowly varying envelope; electrode motion is low-frequency noise in
bursts with step-like transients, which overlaps the QRS band and is the hardest case, as in the NSTDB.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import signal as sp_signal

from training.data.perturbed import keep_timing


def qrs_peak_to_peak(signal_mv: np.ndarray, fs_hz: float, ann_sample: np.ndarray | None = None) -> float:
    """Median peak-to-peak amplitude of the QRS complexes (+-60 ms around each annotated beat).

    Samples that are NaN (a lead-off gap) are ignored. Without annotations, the median over 1 s windows of the band-passed signal's range (every second
    of ECG holds a QRS at heart rates above 60 bpm)."""
    x = np.asarray(signal_mv, np.float64)
    half = max(1, round(0.06 * fs_hz))
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


def _middle_mean(values: list[float]) -> float:
    """The mean of the middle 90 % (sigamp(1) discards the largest and the smallest 5 %)."""
    v = np.sort(np.asarray(values, np.float64))
    k = int(0.05 * v.size)
    return float(v[k:v.size - k].mean())


def nst_snr_db(signal_mv: np.ndarray, noise_mv: np.ndarray, fs_hz: float, ann_sample: np.ndarray,
               ann_symbol: list[str] | np.ndarray | None = None) -> float:
    """The SNR WFDB's ``nst`` would state for ``noise_mv`` added to ``signal_mv`` (nst(1) and sigamp(1)), to set
    beside the suite's own calibration (``scale_to_snr``: median QRS range +-60 ms of all beats, the noise's
    whole-record variance). S = pp^2 / 8, pp the mean of the middle 90 % of the ranges +-50 ms around the first
    300 normal beats (all beats when a record has no 'N', e.g. bundle branch block); N = the square of the mean
    of the middle 90 % of the RMS values, each about its own mean, of the noise's first 300 one-second chunks."""
    x, noise = np.asarray(signal_mv, np.float64), np.asarray(noise_mv, np.float64)
    half, n = round(0.05 * fs_hz), int(fs_hz)
    beats = np.asarray(ann_sample, np.int64)
    if ann_symbol is not None and np.any(np.asarray(ann_symbol) == "N"):
        beats = beats[np.asarray(ann_symbol) == "N"]
    beats = beats[(beats >= half) & (beats + half < x.size)][:300]
    if beats.size == 0 or noise.size < n:
        raise ValueError("nst_snr_db needs annotated beats and at least one second of noise")
    pp = _middle_mean([np.ptp(x[b - half:b + half + 1]) for b in beats])
    chunks = noise[: min(noise.size // n, 300) * n].reshape(-1, n)
    rms = np.sqrt(np.mean((chunks - chunks.mean(axis=1, keepdims=True)) ** 2, axis=1))
    return float(10 * np.log10((pp ** 2 / 8) / _middle_mean(list(rms)) ** 2))


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
        return keep_timing(np.asarray(signal_mv, np.float64) + wander, fs_hz, ann_sample)


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
        return keep_timing(np.asarray(signal_mv, np.float64) + scale_to_snr(noise, pp, self.snr_db), fs_hz, ann_sample)


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
        return keep_timing(np.asarray(signal_mv, np.float64) + scale_to_snr(noise, pp, self.snr_db), fs_hz, ann_sample)


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
        return keep_timing(np.asarray(signal_mv, np.float64) + self.amplitude_mv * env * hum, fs_hz, ann_sample)
