"""Beat-classification metrics as the arrhythmia literature reports them (Se, +P per AAMI class)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are reference classes, columns are predicted classes."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str],
                          macro_over: Sequence[str] | None = None) -> dict:
    """Per-class sensitivity (Se = recall), positive predictivity (+P = precision) and F1, plus
    accuracy and macro F1.

    Macro F1 averages ``macro_over`` (default: every class) among those present in the reference: a
    class with no reference beats has Se = None and is left out rather than counted as 0 or 1. For AAMI,
    pulsewire averages N, S, V, F: Q (paced/unclassifiable) has 8 beats in DS1 and 7 in DS2.
    """
    macro_over = tuple(class_names if macro_over is None else macro_over)
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    per_class = {}
    f1s = []
    for i, name in enumerate(class_names):
        tp = cm[i, i]
        se = _ratio(tp, cm[i, :].sum())
        ppv = _ratio(tp, cm[:, i].sum())
        f1 = None
        if se is not None:
            f1 = 0.0 if not ppv or not se else 2 * se * ppv / (se + ppv)
            if name in macro_over:
                f1s.append(f1)
        per_class[name] = {"se": se, "ppv": ppv, "f1": f1, "support": int(cm[i, :].sum()),
                           "predicted": int(cm[:, i].sum())}
    total = cm.sum()
    return {
        "per_class": per_class,
        "accuracy": _ratio(np.trace(cm), total),
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "macro_f1_classes": [n for n in macro_over if per_class[n]["f1"] is not None],
        "confusion": cm.tolist(),
        "n_beats": int(total),
    }
