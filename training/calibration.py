"""Per-class logit offsets, folded into the output layer's bias: the decision rule after training.

Class weighting sets one trade-off between classes while the network learns; it also shifts every
decision towards the rare classes (a weight w_c adds about log w_c to class c's logit). Adding an
offset ``o_c`` to class c's logit moves the decision boundaries without retraining. Two rules:
``prior`` undoes the weighting at decision time (o_c = log w_N - log w_c: no fitting at all), ``fitted``
searches offsets that maximise macro F1 on the held-out DS1 patients. Which one ships was chosen on
held-out DS1 patients (docs/classifier.md): ``prior``; ``fitted`` overfits four or five patients. Because the network ends in
``softmax(W h + b)``, ``argmax(log p + o) == argmax(W h + b + o)``: the offsets are folded into ``b``
before export, so the float32 and int8 TFLite models, the edge runtime and the generated C all apply
them without knowing they exist (nothing extra in the input contract or the interpreters).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import numpy as np

from edge_runtime.metrics import classification_report

log = logging.getLogger(__name__)

#: The softmax layer of ``training.model.build_classifier``; its bias takes the offsets.
OUTPUT_LAYER = "probs"


@dataclass(frozen=True)
class OffsetSearch:
    """Coordinate ascent over a grid of offsets for ``tuned`` classes (the first class stays at 0: only
    differences between logits matter). A coarse grid and few passes on purpose: the held-out patients
    are a handful, and a fine search would fit their idiosyncrasies rather than the boundary."""

    tuned: tuple[str, ...] = ("S", "V", "F")
    low: float = -3.0
    high: float = 3.0
    step: float = 0.25
    passes: int = 3

    def __post_init__(self) -> None:
        if not self.low <= 0 <= self.high or self.step <= 0 or self.passes < 1:
            raise ValueError("need low <= 0 <= high, step > 0 and passes >= 1 for the offset search")

    def grid(self) -> np.ndarray:
        n = int(round((self.high - self.low) / self.step))
        return np.round(self.low + self.step * np.arange(n + 1), 6)


def _score(log_probs: np.ndarray, labels: np.ndarray, offsets: np.ndarray, classes: tuple[str, ...],
           scored: tuple[str, ...]) -> float:
    pred = np.argmax(log_probs + offsets, axis=1)
    return classification_report(labels, pred, classes, macro_over=scored)["macro_f1"] or 0.0


def fit_logit_offsets(probs: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], scored: tuple[str, ...],
                      search: OffsetSearch = OffsetSearch()) -> np.ndarray:
    """Offsets (one per class) that maximise macro F1 over ``scored`` on these (validation) beats.

    A move is taken only if it strictly improves the score; among equal scores the smallest |offset|
    wins, so a class the validation beats say nothing about keeps offset 0.
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape != (labels.size, len(classes)):
        raise ValueError(f"probs must be (n_beats, {len(classes)}), got {probs.shape} for {labels.size} labels")
    unknown = set(search.tuned) - set(classes)
    if unknown:
        raise ValueError(f"offset search names unknown classes {sorted(unknown)}; classes are {classes}")
    log_probs = np.log(np.clip(probs, 1e-12, 1.0))
    offsets = np.zeros(len(classes))
    best = _score(log_probs, labels, offsets, classes, scored)
    grid = sorted(search.grid(), key=abs)  # ties go to the offset closest to 0
    for _ in range(search.passes):
        moved = False
        for name in search.tuned:
            c = classes.index(name)
            for value in grid:
                trial = offsets.copy()
                trial[c] = value
                score = _score(log_probs, labels, trial, classes, scored)
                if score > best + 1e-12:
                    best, offsets, moved = score, trial, True
        if not moved:
            break
    log.info("logit offsets %s: validation macro F1 %.4f", dict(zip(classes, offsets.round(3))), best)
    return offsets.astype(np.float32)


OFFSET_RULES = ("none", "prior", "fitted")


def prior_offsets(class_weights: np.ndarray) -> np.ndarray:
    """o_c = log w_0 - log w_c: the logit shift the class weights put in, taken out again (class 0, N, keeps 0)."""
    w = np.asarray(class_weights, np.float64)
    if w.ndim != 1 or np.any(w <= 0):
        raise ValueError(f"class weights must be a 1-D array of positive numbers, got {w}")
    return (np.log(w[0]) - np.log(w)).astype(np.float32)


def fold_offsets(model: keras.Model, offsets: np.ndarray) -> None:
    """Add ``offsets`` to the output layer's bias in place: the model then predicts ``argmax(logits + o)``."""
    layer = model.get_layer(OUTPUT_LAYER)
    kernel, bias = layer.get_weights()
    offsets = np.asarray(offsets, bias.dtype)
    if offsets.shape != bias.shape:
        raise ValueError(f"need one offset per output class {bias.shape}, got {offsets.shape}")
    layer.set_weights([kernel, bias + offsets])
