"""Streaming R-peak detection in the manner of Pan & Tompkins (1985), in bounded memory.

The linear part (QRS band-pass, five-point derivative, squaring, 150 ms moving-window integration)
runs on whole chunks with carried filter state, so it costs a few vectorised passes per chunk. The
decision part walks only the local maxima of the integrated signal (a handful per second) with the
paper's adaptive thresholds, refractory period, T-wave slope test and search-back for missed beats.
Every decision depends on samples already seen, never on where a chunk ends: feeding a record in
pieces of any size gives exactly the peaks of feeding it whole (a test checks it).

Start-up and recovery: the QRS filter starts at the steady state of its first input; a candidate whose
energy exceeds ``artefact_ratio`` times the signal level (a DC step when an electrode is re-attached, an
amplifier driven into its rails, a knock on the cable) is not a beat: the detector blanks briefly and
re-learns its levels from the next ``learning_s`` seconds, as at start-up. With no beat for ``relearn_s``
seconds (after search-back also failed) it re-learns too, so a level learned from an artefact, a lead-off or
a change of gain can never leave it blind for good. Mains hum (50 and 60 Hz) is notched out of the QRS
band before the derivative, which would otherwise amplify it.

Noise: a first-order 20 Hz low-pass follows the QRS band (muscle noise leaks through the band's upper skirt and
the derivative amplifies it), and the noise level rises faster than Pan & Tompkins' 1/8 when a noise peak
exceeds it (``noise_attack``), so a burst of noise lifts threshold 1 within a few peaks instead of passing it;
both chosen on DS1 (docs/robustness.md, "Noise-adaptive detection"). While the noise level is high (above
``crest_when`` x the signal level), a candidate above threshold 1 but not above the signal level must also look like
a QRS: its largest squared slope at least ``min_crest`` times its window's mean squared slope (a QRS is narrow, a
motion hump or a broad T wave is not); otherwise it is a noise peak that search-back may still take
(docs/robustness.md, "QRS-shape test in noise"). The configuration is in ``rpeak_config``.

The detector never sees annotations. It reports each beat at its R location: the largest deflection
of the 0.5-40 Hz signal near the QRS energy peak, the fiducial point the classifier was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal as sp_signal

from edge_runtime.filtering import sosfilt_chunk
from edge_runtime.rpeak_config import DetectorConfig
from edge_runtime.sample_history import SampleHistory

__all__ = ["DetectorConfig", "StreamingRPeakDetector", "detect_rpeaks", "fir_filter"]


@dataclass
class _Beat:
    index: int  # sample index of the integrated-signal peak
    height: float
    slope: float


@dataclass
class _Levels:
    """Pan & Tompkins' running signal and noise peak levels and the thresholds between them."""

    spk: float = 0.0
    npk: float = 0.0
    fraction: float = 0.25
    attack: float = 0.125

    @property
    def threshold1(self) -> float:
        return self.npk + self.fraction * (self.spk - self.npk)

    def noise(self, height: float) -> None:
        """A noise peak (or a T wave): the running noise level follows it, faster upwards if so configured."""
        w = self.attack if height > self.npk else 0.125
        self.npk = w * height + (1 - w) * self.npk

    @property
    def threshold2(self) -> float:
        return 0.5 * self.threshold1


def fir_filter(taps: np.ndarray, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.signal.lfilter(taps, 1.0, x, zi=zi)`` for an FIR filter, the same arithmetic (one
    ``np.convolve``, the state added to its first samples) without lfilter's per-call overhead, which cost
    more than the convolution itself on one-second chunks. Tests check it equals lfilter bit for bit."""
    full = np.convolve(taps, x)
    full[:zi.size] += zi
    n = x.size
    return full[:n], full[n:]


class StreamingRPeakDetector:
    """Feed band-passed samples with ``process``; it returns the R-peak indices it has settled."""

    def __init__(self, cfg: DetectorConfig | None = None) -> None:
        cfg = cfg or DetectorConfig()
        self.cfg = cfg
        self._sos = cfg.qrs_sos()
        self._sos_zi: np.ndarray | None = None
        self._deriv_taps = np.array([1, 2, 0, -2, -1], float) * (cfg.fs_hz / 8.0)
        self._deriv_zi = np.zeros(4)
        n = cfg.samples(cfg.integration_s)
        self._mwi_taps = np.full(n, 1.0 / n)
        self._mwi_zi = np.zeros(n - 1)
        self._seen = 0  # samples consumed
        self._x = SampleHistory()  # band-passed input, for R location
        self._slope = SampleHistory()  # |derivative|, for the T-wave test
        self._mwi_tail = np.zeros(0)  # the last two integrated samples, to find maxima across chunks
        self._learning: list[_Beat] = []
        self._levels: _Levels | None = None
        self._last: _Beat | None = None  # the latest QRS, not yet reported
        self._reported_last: _Beat | None = None
        self._last_r: int | None = None  # the last R location reported
        self._noise_since_last: list[_Beat] = []
        self._rr: list[int] = []
        self._n_flat, self._n_relearn = cfg.samples(cfg.flat_s), cfg.samples(cfg.relearn_s)
        self._learn_end = cfg.samples(cfg.learning_s)  # the learning phase ends at the first candidate from here
        self._blank_until = 0  # candidates before this sample are ignored (the tail of an artefact)
        self._artefact_level: float | None = None  # the signal level before an artefact, while re-learning
        self._artefacts_seen = 0  # artefacts met during this re-learning
        self._last_event = 0  # the last accepted QRS or the end of learning: the re-learning clock
        self._last_candidate: int | None = None
        #: How often the detector re-learned: after an artefact, and after ``relearn_s`` without a beat.
        self._settled_levels: list[tuple[float, float]] = []  # (spk, npk) when each reported peak settled
        self.artefacts = 0
        self.flat_lines = 0
        self.relearned = 0

    # ------------------------------------------------------------------ public
    def process(self, chunk: np.ndarray) -> np.ndarray:
        x = np.asarray(chunk, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"expected a 1-D chunk of samples, got shape {x.shape}")
        if x.size == 0:
            return np.zeros(0, np.int64)
        mwi, slope = self._features(x)
        base = self._seen
        self._x.append(x)
        self._slope.append(slope)
        self._seen += x.size
        out: list[int] = []
        for beat in self._candidates(mwi, base):
            if beat.height >= self.cfg.min_height:
                self._decide(beat, out)
        self._trim()
        return np.asarray(out, np.int64)

    def flush(self) -> np.ndarray:
        """End of stream: report the beat still waiting for its refractory period to pass."""
        out: list[int] = []
        if self._levels is None and self._learning:
            self._finish_learning(out)
        if self._last is not None:
            self._settle(out)
        return np.asarray(out, np.int64)

    def take_levels(self) -> list[tuple[float, float]]:
        """The (signal, noise) peak levels at the moment each peak reported since the last call settled,
        in the same order: the detector's own view of the signal-to-noise ratio at that beat."""
        levels, self._settled_levels = self._settled_levels, []
        return levels

    def oldest_possible_peak(self) -> int:
        """No R peak reported from now on can lie before this sample (what callers may forget)."""
        return self._x.start

    # ------------------------------------------------------------------ linear stage
    def _features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._sos_zi is None:
            self._sos_zi = sp_signal.sosfilt_zi(self._sos) * x[0]
        qrs, self._sos_zi = sosfilt_chunk(self._sos, x, self._sos_zi)
        deriv, self._deriv_zi = fir_filter(self._deriv_taps, qrs, self._deriv_zi)
        mwi, self._mwi_zi = fir_filter(self._mwi_taps, deriv * deriv, self._mwi_zi)
        return mwi, np.abs(deriv)

    def _candidates(self, mwi: np.ndarray, base: int) -> list[_Beat]:
        """Local maxima of the integrated signal (rising into, not rising out of), in order."""
        tail = self._mwi_tail
        full = np.concatenate([tail, mwi])
        offset = base - tail.size
        self._mwi_tail = full[-2:]
        if full.size < 3:
            return []
        mid = full[1:-1]
        idx = np.flatnonzero((mid > full[:-2]) & (mid >= full[2:])) + 1
        if idx.size == 0:
            return []
        w = self.cfg.samples(self.cfg.integration_s)
        # the largest slope in the w + 1 samples up to each candidate, all candidates at once (exact: a max)
        ks = offset + idx
        held = self._slope
        lo = max(held.start, int(ks[0]) - w)
        span = np.concatenate([np.zeros(1), held.window(lo, int(ks[-1]) + 1)])  # slopes are >= 0: 0 = "none"
        pos = ks[:, None] - lo + np.arange(-w, 1)[None, :] + 1
        slopes = span[np.clip(pos, 0, None)].max(axis=1)
        return [_Beat(int(k), float(full[i]), float(m)) for k, i, m in zip(ks, idx, slopes)]

    # ------------------------------------------------------------------ decisions
    def _decide(self, beat: _Beat, out: list[int]) -> None:
        cfg = self.cfg
        quiet = self._last_candidate is not None and beat.index - self._last_candidate > self._n_flat
        self._last_candidate = beat.index
        if quiet:
            self._on_flat(beat, out)
            return
        if self._levels is None:
            self._learn(beat, out)
            return
        if beat.height > cfg.artefact_ratio * self._levels.spk:
            self._on_artefact(beat, out)
            return
        self._report_settled(beat.index, out)
        if self._last is not None and beat.index - self._last.index < cfg.samples(cfg.refractory_s):
            if beat.height > self._last.height:
                self._last = beat  # the same QRS, a higher point of its energy
            return
        self._search_back(beat.index, out)
        if beat.index - self._last_event > self._n_relearn:
            self._relearn(beat, out)
            return
        levels = self._levels
        previous = self._last or self._reported_last
        if beat.height > levels.threshold1:
            if (previous is not None and beat.index - previous.index < cfg.samples(cfg.t_wave_s)
                    and beat.slope < 0.5 * previous.slope):
                levels.noise(beat.height)  # a T wave
                return
            if not self._blunt(beat):
                self._accept(beat, out, weight=0.125)
                return
        levels.noise(beat.height)  # a noise peak (or a blunt one), which search-back may still take
        self._remember_noise(beat)

    def _blunt(self, beat: _Beat) -> bool:
        """In noise (noise level above ``crest_when`` x the signal level), a candidate no larger than the signal
        level whose energy is spread out (largest slope^2 below ``min_crest`` x its mean squared slope) is no
        QRS: a QRS concentrates its slope in a few tens of milliseconds, a motion or T-wave hump does not."""
        cfg, lv = self.cfg, self._levels
        return (cfg.min_crest is not None and lv.npk > cfg.crest_when * lv.spk and beat.height < lv.spk
                and beat.slope * beat.slope < cfg.min_crest * beat.height)

    def _learn(self, beat: _Beat, out: list[int]) -> None:
        """A candidate of the learning phase; artefacts while re-learning after one restart the phase."""
        cfg = self.cfg
        if beat.index < self._blank_until:
            return
        if self._artefact_level is not None and beat.height > cfg.artefact_ratio * self._artefact_level:
            self._artefacts_seen += 1
            if self._artefacts_seen < cfg.artefact_restarts:
                self._start_learning(beat.index + cfg.samples(cfg.artefact_blank_s))
                return
            self._artefact_level = None  # they keep coming: the signal itself has grown
        self._learning.append(beat)
        if beat.index >= self._learn_end:
            self._finish_learning(out)

    def _start_learning(self, blank_until: int) -> None:
        self._levels = None
        self._learning = []
        self._noise_since_last = []
        self._blank_until = blank_until
        self._learn_end = blank_until + self.cfg.samples(self.cfg.learning_s)

    def _on_artefact(self, beat: _Beat, out: list[int]) -> None:
        """A step, a saturation or a knock: blank it, then learn the levels again from what follows.
        A pending QRS inside the artefact's refractory period was its leading edge, not a beat."""
        if self._last is not None:
            if beat.index - self._last.index < self.cfg.samples(self.cfg.refractory_s):
                self._last = None
            else:
                self._settle(out)
        self.artefacts += 1
        self._blank_after(beat)

    def _on_flat(self, beat: _Beat, out: list[int]) -> None:
        """The input moves again after a flat stretch: this candidate is the step back; learn anew after it."""
        if self._last is not None:
            self._settle(out)
        self.flat_lines += 1
        self._blank_after(beat)

    def _blank_after(self, beat: _Beat) -> None:
        """Ignore what follows ``beat`` for a moment, then learn; remember the level to spot more artefacts."""
        if self._levels is not None:
            self._artefact_level, self._artefacts_seen = self._levels.spk, 0
        self._start_learning(beat.index + self.cfg.samples(self.cfg.artefact_blank_s))

    def _relearn(self, beat: _Beat, out: list[int]) -> None:
        """No beat for ``relearn_s``: the levels no longer fit the signal; learn them from here on."""
        if self._last is not None:
            self._settle(out)
        self.relearned += 1
        self._artefact_level = None
        self._start_learning(beat.index)
        self._learn(beat, out)

    def _remember_noise(self, beat: _Beat) -> None:
        """Search-back candidates, bounded: only the highest can ever be chosen."""
        self._noise_since_last.append(beat)
        if len(self._noise_since_last) > 64:
            top = sorted(self._noise_since_last, key=lambda b: -b.height)[:32]
            self._noise_since_last = sorted(top, key=lambda b: b.index)

    def _accept(self, beat: _Beat, out: list[int], weight: float) -> None:
        levels = self._levels
        levels.spk = weight * beat.height + (1 - weight) * levels.spk
        if self._last is not None:
            self._settle(out)
        previous = self._reported_last
        if previous is not None:
            self._rr = (self._rr + [beat.index - previous.index])[-8:]
        self._last = beat
        self._last_event = beat.index
        self._noise_since_last = []

    def _search_back(self, now: int, out: list[int]) -> None:
        """No QRS for 1.66 RR: the largest noise peak above the lower threshold was a beat after all."""
        previous = self._last or self._reported_last
        if previous is None or not self._rr:
            return
        if now - previous.index <= self.cfg.searchback_rr * (sum(self._rr) / len(self._rr)):  # np.mean, cheaper
            return
        refractory = self.cfg.samples(self.cfg.refractory_s)
        pool = [b for b in self._noise_since_last
                if b.index - previous.index >= refractory and b.height > self._levels.threshold2]
        if pool:
            self._accept(max(pool, key=lambda b: b.height), out, weight=0.25)

    def _finish_learning(self, out: list[int]) -> None:
        """Pan & Tompkins' two-second learning phase: levels from the first candidates' heights."""
        heights = np.array([b.height for b in self._learning])
        self._levels = _Levels(spk=0.25 * float(heights.max()), npk=0.5 * float(np.mean(heights)),
                               fraction=self.cfg.threshold_fraction, attack=self.cfg.noise_attack)
        self._artefact_level = None
        self._last_event = self._learn_end
        pending, self._learning = self._learning, []
        for beat in pending:
            self._decide(beat, out)

    def _report_settled(self, now: int, out: list[int]) -> None:
        if self._last is not None and now - self._last.index >= self.cfg.samples(self.cfg.t_wave_s):
            self._settle(out)

    def _settle(self, out: list[int]) -> None:
        r = self._r_location(self._last)
        if self._last_r is None or r - self._last_r >= self.cfg.samples(self.cfg.refractory_s):
            out.append(r)  # else: two energy peaks around one R wave, reported once
            lv = self._levels
            self._settled_levels.append((lv.spk, lv.npk) if lv is not None else (0.0, 0.0))
            self._last_r = r
        self._reported_last, self._last = self._last, None

    def _r_location(self, beat: _Beat) -> int:
        lo = beat.index + round(self.cfg.r_search_s[0] * self.cfg.fs_hz)
        hi = beat.index + round(self.cfg.r_search_s[1] * self.cfg.fs_hz) + 1
        segment = self._x.window(lo, hi)
        if segment.size == 0:
            return beat.index
        return max(lo, self._x.start) + int(np.argmax(np.abs(segment)))

    def _trim(self) -> None:
        """Keep only what a pending decision can still look at: a few seconds, however long the stream."""
        keep_s = max(self.cfg.learning_s, 3.0 * self.cfg.searchback_rr) + 1.0
        horizon = self._seen - self.cfg.samples(keep_s)
        oldest = min([b.index for b in ([self._last] if self._last else []) + self._noise_since_last + self._learning],
                     default=horizon)
        keep_from = min(horizon, oldest + round(self.cfg.r_search_s[0] * self.cfg.fs_hz))
        self._x.trim(keep_from)
        self._slope.trim(keep_from)


def detect_rpeaks(filtered: np.ndarray, cfg: DetectorConfig | None = None) -> np.ndarray:
    """All R peaks of a whole band-passed record: the stream fed in one piece."""
    det = StreamingRPeakDetector(cfg)
    return np.concatenate([det.process(filtered), det.flush()])
