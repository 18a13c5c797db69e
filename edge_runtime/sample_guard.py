"""Invalid samples (NaN, infinities: a lead-off flag, an ADC fault, a gap in a file) kept out of the filters.

Each invalid sample is replaced by the last valid one (0 before any), so the time base stays intact and
no filter state ever holds a NaN; the stretch looks flat, which is what the band-pass, the detector and the
quality index treat as lead-off. The C front-end does the same with its ``PW_FE_INVALID`` sentinel.
"""
from __future__ import annotations

import numpy as np


class SampleGuard:
    def __init__(self) -> None:
        self._last = 0.0
        self.invalid = 0  # samples replaced so far

    def process(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(clean, invalid)``: the chunk with invalid samples held at the last valid value, and their mask."""
        x = np.asarray(chunk, dtype=np.float64)
        bad = ~np.isfinite(x)
        if not bad.any():
            if x.size:
                self._last = float(x[-1])
            return x, bad
        idx = np.arange(x.size)
        source = np.maximum.accumulate(np.where(bad, -1, idx))
        clean = np.where(source >= 0, x[np.maximum(source, 0)], self._last)
        self._last = float(clean[-1])
        self.invalid += int(bad.sum())
        return clean, bad
