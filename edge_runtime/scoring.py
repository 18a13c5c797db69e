"""Beat-by-beat comparison with reference annotations, ANSI/AAMI EC57 style.

A reference beat and a detected beat match when they are at most 150 ms apart, each used once,
closest first. Ventricular flutter/fibrillation episodes are excluded from the comparison, as EC57
prescribes (there are no beats to detect in them). Works on any annotated record, not only MIT-BIH.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from edge_runtime.metrics import classification_report

TOLERANCE_S = 0.150


@dataclass(frozen=True)
class DetectionScore:
    true_positives: int
    false_negatives: int
    false_positives: int

    @property
    def sensitivity(self) -> float | None:
        n = self.true_positives + self.false_negatives
        return self.true_positives / n if n else None

    @property
    def positive_predictivity(self) -> float | None:
        n = self.true_positives + self.false_positives
        return self.true_positives / n if n else None

    def __add__(self, other: "DetectionScore") -> "DetectionScore":
        return DetectionScore(self.true_positives + other.true_positives, self.false_negatives + other.false_negatives,
                              self.false_positives + other.false_positives)

    def to_dict(self) -> dict:
        return {**asdict(self), "se": self.sensitivity, "ppv": self.positive_predictivity}


def match_beats(reference: np.ndarray, detected: np.ndarray, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (into ``reference``, into ``detected``) of matched beats; both inputs sorted."""
    ref, det = np.asarray(reference, np.int64), np.asarray(detected, np.int64)
    if ref.size == 0 or det.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # all candidate pairs within tolerance, closest first; each beat used once
    lo = np.searchsorted(det, ref - tolerance, side="left")
    hi = np.searchsorted(det, ref + tolerance, side="right")
    pairs = [(abs(int(det[j]) - int(r)), i, j) for i, (r, a, b) in enumerate(zip(ref, lo, hi)) for j in range(a, b)]
    pairs.sort()
    used_r, used_d, mr, md = set(), set(), [], []
    for _, i, j in pairs:
        if i not in used_r and j not in used_d:
            used_r.add(i)
            used_d.add(j)
            mr.append(i)
            md.append(j)
    order = np.argsort(mr)
    return np.asarray(mr, np.int64)[order], np.asarray(md, np.int64)[order]


def excluded_mask(samples: np.ndarray, episodes: Sequence[tuple[int, int]]) -> np.ndarray:
    """True for samples inside any [start, end) episode."""
    samples = np.asarray(samples, np.int64)
    mask = np.zeros(samples.size, bool)
    for start, end in episodes:
        mask |= (samples >= start) & (samples < end)
    return mask


def flutter_episodes(samples: Sequence[int], symbols: Sequence[str], aux_notes: Sequence[str],
                     n_samples: int) -> list[tuple[int, int]]:
    """[start, end) ranges of ventricular flutter/fibrillation: between '[' and ']' annotations, and from a
    rhythm "(VF"/"(VFL" annotation to the next rhythm change."""
    episodes, start = [], None
    for sample, symbol, aux in zip(samples, symbols, aux_notes):
        rhythm = (aux or "").rstrip("\x00") if symbol == "+" else None
        opens = symbol == "[" or rhythm in ("(VF", "(VFL")
        closes = symbol == "]" or (rhythm is not None and rhythm not in ("(VF", "(VFL"))
        if opens and start is None:
            start = int(sample)
        elif closes and start is not None:
            episodes.append((start, int(sample)))
            start = None
    if start is not None:
        episodes.append((start, int(n_samples)))
    return episodes


def score_detection(reference: np.ndarray, detected: np.ndarray, fs_hz: float,
                    excluded: Sequence[tuple[int, int]] = (), tolerance_s: float = TOLERANCE_S) -> DetectionScore:
    ref = np.sort(np.asarray(reference, np.int64))
    det = np.sort(np.asarray(detected, np.int64))
    ref, det = ref[~excluded_mask(ref, excluded)], det[~excluded_mask(det, excluded)]
    mr, _ = match_beats(ref, det, int(round(tolerance_s * fs_hz)))
    return DetectionScore(int(mr.size), int(ref.size - mr.size), int(det.size - mr.size))


def score_classes(ref_samples: np.ndarray, ref_labels: np.ndarray, det_samples: np.ndarray, det_labels: np.ndarray,
                  class_names: Sequence[str], fs_hz: float, macro_over: Sequence[str],
                  excluded: Sequence[tuple[int, int]] = (), tolerance_s: float = TOLERANCE_S) -> dict:
    """Per-class Se/+P on matched beats (labels as class indices), plus the detection score."""
    keep_r = ~excluded_mask(ref_samples, excluded)
    keep_d = ~excluded_mask(det_samples, excluded)
    rs, rl = np.asarray(ref_samples)[keep_r], np.asarray(ref_labels)[keep_r]
    ds, dl = np.asarray(det_samples)[keep_d], np.asarray(det_labels)[keep_d]
    mr, md = match_beats(rs, ds, int(round(tolerance_s * fs_hz)))
    report = classification_report(rl[mr], dl[md], class_names, macro_over=macro_over)
    report["detection"] = DetectionScore(int(mr.size), int(rs.size - mr.size), int(ds.size - mr.size)).to_dict()
    return report
