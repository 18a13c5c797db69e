"""Streaming rational resampling: a device's 128/250/500 Hz input to the model's rate.

Zero-stuff by L, low-pass (Kaiser-windowed FIR, cut at the lower Nyquist), keep every M-th sample; the
FIR state (started at the first sample's steady state) and the decimation phase carry across chunks, so chunking does not change the output (beyond float rounding).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy import signal as sp_signal


class StreamingResampler:
    def __init__(self, fs_in: float, fs_out: float, max_denominator: int = 1000) -> None:
        if fs_in <= 0 or fs_out <= 0:
            raise ValueError("sampling rates must be positive")
        ratio = Fraction(fs_out / fs_in).limit_denominator(max_denominator)
        self.up, self.down = ratio.numerator, ratio.denominator
        self.fs_in, self.fs_out = fs_in, fs_in * self.up / self.down
        self.identity = self.up == self.down == 1
        n = 2 * 10 * max(self.up, self.down) + 1 if not self.identity else 1
        self._taps = np.ones(1) if self.identity else \
            sp_signal.firwin(n, 1.0 / max(self.up, self.down), window=("kaiser", 5.0)) * self.up
        self._zi: np.ndarray | None = None  # set from the first sample (steady state)
        self._phase = 0  # index, in the upsampled stream of this chunk, of the next kept sample

    def to_input_index(self, output_index: np.ndarray | int) -> np.ndarray:
        """The input sample an output sample corresponds to (the FIR's group delay taken out)."""
        if self.identity:
            return np.asarray(output_index, np.int64)
        delay = (self._taps.size - 1) / 2
        return np.round((np.asarray(output_index) * self.down - delay) / self.up).astype(np.int64)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        x = np.asarray(chunk, np.float64)
        if self.identity or x.size == 0:
            return x
        if self._zi is None:
            self._zi = self._steady_state(float(x[0]))
        stuffed = np.zeros(x.size * self.up)
        stuffed[:: self.up] = x
        y, self._zi = sp_signal.lfilter(self._taps, 1.0, stuffed, zi=self._zi)
        out = y[self._phase:: self.down]
        self._phase = (self._phase - stuffed.size) % self.down
        return out

    def _steady_state(self, x0: float) -> np.ndarray:
        """The FIR state as if the stream had always been ``x0``: an electrode's DC offset (up to hundreds of
        mV) would otherwise enter as a step from zero, whose ringing the band-pass turns into a transient
        hundreds of times a QRS, and the detector would learn its thresholds from it."""
        periods = -(-(self._taps.size - 1) // self.up) + 1
        history = np.zeros(periods * self.up)
        history[:: self.up] = x0
        _, zi = sp_signal.lfilter(self._taps, 1.0, history, zi=np.zeros(self._taps.size - 1))
        return zi
