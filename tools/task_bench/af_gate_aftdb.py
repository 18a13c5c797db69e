"""What a P-wave gate removes from AF it never chose on: the AF Termination Challenge segments, all AF.

Every aftdb window is AF, so the share whose ``p_corr_median_normal`` reaches a gate is that gate's miss rate on
AF of people outside MIT-BIH. The gate alone is scored (no network): the task's network trains on these segments,
so its own AF probabilities here would be training-set numbers, while the gate is a fixed threshold on a feature
and none of its candidate values was chosen on aftdb. Two views: windows kept (pooled), and segments in which a
>= ``min_episode_s`` episode is still possible after the gate and the task's vote (of the segments where it is
possible without a gate: at a slow ventricular rate a one-minute segment spans too few 32-beat windows).
"""
from __future__ import annotations

import numpy as np

from training.data.splits import DS1


def _segment_windows(task) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(segment, p_corr_median_normal per window, window spans)`` of every aftdb segment (the task's loader)."""
    from edge_runtime.af_features import FEATURE_NAMES
    from training.tasks.af import HOP, P_GATE_FEATURE

    column = FEATURE_NAMES.index(P_GATE_FEATURE)
    out = []
    for name in (p for p in task.persons("train", 0) if p not in DS1):
        wins = task.record_windows(name, HOP)
        out.append((name, wins.features[:, column].astype(np.float64), wins.span_s))
    if not out:
        raise ValueError("no aftdb segments among the AF task's training persons (EXTERNAL_AF off?)")
    return out


def _episode_possible(flags: np.ndarray, span_s: np.ndarray, smooth: int, min_s: float) -> bool:
    from edge_runtime.af_episodes import smooth_decisions
    from training.tasks.af_metrics import merge_spans

    return any(e[1] - e[0] >= min_s for e in merge_spans(span_s, smooth_decisions(flags, smooth)))


def retention(spans: dict[str, np.ndarray], kept: dict[str, np.ndarray], smooth: int, min_s: float) -> dict:
    """AF windows kept (pooled) and segments still allowing a >= ``min_s`` episode, of those allowing one ungated."""
    possible = {n for n, s in spans.items() if _episode_possible(np.ones(len(s), bool), s, smooth, min_s)}
    total = sum(len(s) for s in spans.values())
    lost = sorted(n for n in possible if not _episode_possible(kept[n], spans[n], smooth, min_s))
    per_segment = [float(k.mean()) for k in kept.values() if k.size]
    return {"window_retention": float(sum(k.sum() for k in kept.values()) / total),
            "segment_retention": 1.0 - len(lost) / max(len(possible), 1),
            "worst_segment_window_retention": min(per_segment),
            "segments_losing_their_episode": lost,
            "counts": {"windows": int(total), "segments": len(spans), "segments_with_possible_episode": len(possible)}}


def aftdb_retention(task, gates: tuple[float, ...], smooth: int, min_s: float) -> list[dict]:
    """Per gate (``np.inf`` = no gate): windows and segments of aftdb AF the gate keeps."""
    segments = _segment_windows(task)
    spans = {n: s for n, _, s in segments}
    return [retention(spans, {n: p < gate for n, p, _ in segments}, smooth, min_s) for gate in gates]
