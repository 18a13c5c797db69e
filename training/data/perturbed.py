"""What a perturbation of a raw ECG lead is: the interface every named perturbation implements, the perturbed
lead it returns (with the sample ranges left out of scoring), and the timing rules they share: where events
fall in a record and how long the front-end takes to recover after one."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

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


def event_starts(rng: np.random.Generator, n: int, fs_hz: float, every_s: float, length_s: float) -> np.ndarray:
    """Start samples of events spread over the record: one per ``every_s`` seconds, jittered, none in the first 2 s."""
    count = max(1, int(n / fs_hz // every_s))
    span = n - int((length_s + 2 * RECOVERY_S) * fs_hz)
    first = int(2 * fs_hz)
    if span <= first:
        return np.zeros(0, np.int64)
    slots = np.linspace(first, span, count + 1)
    return np.sort(np.asarray([int(rng.uniform(a, b)) for a, b in zip(slots[:-1], slots[1:])], np.int64))


def keep_timing(x: np.ndarray, fs_hz: float, ann: np.ndarray, excluded=()) -> Perturbed:
    return Perturbed(x, fs_hz, np.asarray(ann, np.int64).copy(), tuple(excluded))
