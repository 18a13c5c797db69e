"""ANSI/AAMI EC57 beat classes from MIT-BIH beat symbols."""
from __future__ import annotations

import numpy as np

#: Class order used by every model and metric in pulsewire.
AAMI_CLASSES: tuple[str, ...] = ("N", "S", "V", "F", "Q")

_SYMBOL_TO_CLASS: dict[str, str] = {
    # N: normal, bundle branch blocks, escape beats
    "N": "N", "L": "N", "R": "N", "e": "N", "j": "N",
    # S: supraventricular ectopic
    "A": "S", "a": "S", "J": "S", "S": "S",
    # V: ventricular ectopic
    "V": "V", "E": "V",
    # F: fusion of ventricular and normal
    "F": "F",
    # Q: paced, fusion of paced and normal, unclassifiable
    "/": "Q", "f": "Q", "Q": "Q",
}


def aami_class(symbol: str) -> str | None:
    """AAMI class of a beat symbol, or None for non-beat annotations (rhythm, noise, ...)."""
    return _SYMBOL_TO_CLASS.get(symbol)


def aami_labels(symbols: list[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels (index into ``AAMI_CLASSES``) for the beat symbols, and their positions."""
    labels, positions = [], []
    for i, sym in enumerate(symbols):
        cls = _SYMBOL_TO_CLASS.get(str(sym))
        if cls is not None:
            labels.append(AAMI_CLASSES.index(cls))
            positions.append(i)
    return np.asarray(labels, np.int8), np.asarray(positions, np.int64)
