"""Anomaly-detection arithmetic on scores: AUC-ROC per class against normal beats, the percentile threshold
and sensitivity / positive predictivity at it. Pure numpy on score arrays, so it is tested on hand-made scores.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import rankdata

#: Percentiles of held-out normal scores the threshold may sit at; the task picks one on DS1 validation persons.
PERCENTILES: tuple[float, ...] = (90.0, 95.0, 97.5, 99.0, 99.5)


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half (Mann-Whitney U).
    NaN when either side is empty: an AUC of nothing is not 0.5."""
    pos, neg = np.asarray(positive, np.float64).ravel(), np.asarray(negative, np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("scores hold NaN or infinite values")
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def threshold_at(normal_scores: np.ndarray, percentile: float) -> float:
    """The score below which ``percentile`` % of held-out normal beats fall."""
    scores = np.asarray(normal_scores, np.float64).ravel()
    if scores.size == 0:
        raise ValueError("no normal beats to set the threshold on; give validation persons with N beats")
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must be in (0, 100), got {percentile}")
    return float(np.percentile(scores, percentile))


def detection(scores: np.ndarray, labels: np.ndarray, threshold: float, class_names: Sequence[str],
              normal: int = 0) -> dict[str, float]:
    """Per abnormal class k: Se = share of its beats scored above ``threshold``; +P = flagged k beats over
    flagged k beats plus flagged normal beats (the detector names no class, so each class is scored against
    the normal beats it competes with, as its AUC is). Overall: Se and +P of "any abnormal" and the false
    alarm rate on normal beats. NaN where a class has no beats."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    flagged = scores > threshold
    false_alarms = int(np.sum(flagged & (labels == normal)))
    out: dict[str, float] = {"false_alarm_rate": _ratio(false_alarms, int(np.sum(labels == normal)))}
    for k, name in enumerate(class_names):
        if k == normal:
            continue
        hits = int(np.sum(flagged & (labels == k)))
        out[f"se_{name}"] = _ratio(hits, int(np.sum(labels == k)))
        out[f"ppv_{name}"] = _ratio(hits, hits + false_alarms) if np.any(labels == k) else float("nan")
    abnormal = labels != normal
    hits = int(np.sum(flagged & abnormal))
    out["se_abnormal"] = _ratio(hits, int(abnormal.sum()))
    out["ppv_abnormal"] = _ratio(hits, int(flagged.sum()))
    return out


def aucs(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str], normal: int = 0) -> dict[str, float]:
    """``auc_<class>`` of every abnormal class against normal beats, and ``auc_abnormal`` of all of them."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    neg = scores[labels == normal]
    out = {f"auc_{name}": roc_auc(scores[labels == k], neg) for k, name in enumerate(class_names) if k != normal}
    out["auc_abnormal"] = roc_auc(scores[labels != normal], neg)
    return out


def choose_percentile(scores: np.ndarray, labels: np.ndarray, candidates: Sequence[float] = PERCENTILES,
                      normal: int = 0) -> tuple[float, float]:
    """(percentile, threshold) maximising F1 of "abnormal" on held-out persons' beats; the threshold is that
    percentile of the same persons' normal scores. Call it on validation persons only, never on test."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    normal_scores = scores[labels == normal]
    abnormal = labels != normal
    if not candidates:
        raise ValueError("give at least one candidate percentile")
    best: tuple[float, float, float] = (-1.0, 0.0, 0.0)
    for p in candidates:
        t = threshold_at(normal_scores, p)
        flagged = scores > t
        tp = int(np.sum(flagged & abnormal))
        f1 = 2 * tp / max(int(flagged.sum()) + int(abnormal.sum()), 1)
        if f1 > best[0]:
            best = (f1, p, t)
    return best[1], best[2]


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")
