"""The recent past of a sample stream, addressed by absolute sample index, trimmed by its owner."""
from __future__ import annotations

import numpy as np


class SampleHistory:
    def __init__(self) -> None:
        self.start = 0  # absolute index of data[0]
        self.data = np.zeros(0)

    @property
    def end(self) -> int:
        """One past the newest sample."""
        return self.start + self.data.size

    def append(self, chunk: np.ndarray) -> None:
        self.data = np.concatenate([self.data, chunk])

    def window(self, lo: int, hi: int) -> np.ndarray:
        """Samples [lo, hi) that are still held (clipped to what is)."""
        lo = max(lo, self.start)
        return self.data[lo - self.start:max(lo, hi) - self.start]

    def trim(self, keep_from: int) -> None:
        """Forget everything before absolute index ``keep_from``."""
        cut = min(keep_from - self.start, self.data.size)
        if cut > 0:
            self.data = self.data[cut:]
            self.start += cut
