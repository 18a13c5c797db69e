"""EC57-style AF measures: episode and duration sensitivity / positive predictivity, and AF duration error.

As in ANSI/AAMI EC57 (and WFDB's ``epic``): a reference AF episode is detected when a detected AF episode
overlaps it; a detected episode is a true positive when it overlaps a reference episode. Duration Se is the
share of reference AF time covered by detections, duration +P the share of detected AF time that is reference
AF. Gross figures pool the counts of all records; per-record figures are kept for the report (a record without
reference AF has no Se, one without detections no +P: those are None, not 0 or 100).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

Interval = tuple[float, float]


def merge_spans(span_s: np.ndarray, positive: np.ndarray, gap_s: float = 1e-6) -> list[Interval]:
    """Detected episodes: the spans flagged positive, joined where they touch (within ``gap_s``)."""
    episodes: list[list[float]] = []
    for (a, b), flag in zip(np.asarray(span_s, np.float64), np.asarray(positive, bool)):
        if not flag or b <= a:
            continue
        if episodes and a - episodes[-1][1] <= gap_s:
            episodes[-1][1] = max(episodes[-1][1], float(b))
        else:
            episodes.append([float(a), float(b)])
    return [(a, b) for a, b in episodes]


def _overlap(a: Interval, b: Interval) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def _covered(episodes: Sequence[Interval], by: Sequence[Interval]) -> float:
    return sum(_overlap(e, d) for e in episodes for d in by)


def record_counts(reference: Sequence[Interval], detected: Sequence[Interval]) -> dict[str, float]:
    """The raw counts of one record (what the gross figures pool)."""
    for name, eps in (("reference", reference), ("detected", detected)):
        if any(not (np.isfinite(a) and np.isfinite(b)) or b < a for a, b in eps):
            raise ValueError(f"{name} episodes must be finite [start, end) pairs with end >= start")
    return {
        "ref_episodes": len(reference),
        "ref_detected": sum(any(_overlap(r, d) > 0 for d in detected) for r in reference),
        "det_episodes": len(detected),
        "det_true": sum(any(_overlap(d, r) > 0 for r in reference) for d in detected),
        "ref_s": float(sum(b - a for a, b in reference)),
        "det_s": float(sum(b - a for a, b in detected)),
        "overlap_s": float(_covered(reference, detected)),
    }


def _ratio(num: float, den: float) -> float | None:
    return None if den <= 0 else float(num / den)


def measures(counts: dict[str, float]) -> dict[str, float | None]:
    """Se / +P (episode and duration) and the duration error of one record or of pooled counts."""
    return {
        "episode_se": _ratio(counts["ref_detected"], counts["ref_episodes"]),
        "episode_ppv": _ratio(counts["det_true"], counts["det_episodes"]),
        "duration_se": _ratio(counts["overlap_s"], counts["ref_s"]),
        "duration_ppv": _ratio(counts["overlap_s"], counts["det_s"]),
        "duration_error_s": float(counts["det_s"] - counts["ref_s"]),
    }


def af_report(records: Iterable[tuple[str, Sequence[Interval], Sequence[Interval]]]) -> dict:
    """Per-record and gross measures from ``(record, reference episodes, detected episodes)`` triples.

    Adds ``abs_duration_error_min``: the mean over records of |detected - reference| AF minutes, the error of
    the AF burden a clinician would read per recording.
    """
    per_record, pooled = {}, None
    for name, reference, detected in records:
        c = record_counts(reference, detected)
        per_record[name] = {**measures(c), **c}
        pooled = dict(c) if pooled is None else {k: pooled[k] + c[k] for k in c}
    if pooled is None:
        raise ValueError("no records to score")
    gross = measures(pooled)
    gross["abs_duration_error_min"] = float(np.mean([abs(r["duration_error_s"]) for r in per_record.values()]) / 60)
    return {"gross": gross, "counts": pooled, "per_record": per_record}
