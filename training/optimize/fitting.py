"""One training loop for every optimization stage: packed targets, a distillation-ready loss, and the
epoch selected on validation macro F1 — for Keras 3 and tf_keras (QAT) models alike.

Targets are packed as ``[w_c * onehot(label), teacher soft targets]`` (n, 2k): the class weight of
``train.py`` rides on the hard part only, so ``alpha * CE + (1 - alpha) * T^2 * KL`` weights the hard
labels as central training does and leaves the teacher's soft targets unweighted (Hinton et al. 2015).
With ``alpha = 1`` the loss is exactly the class-weighted cross-entropy of ``train_centralized``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from edge_runtime.aami import AAMI_CLASSES
from edge_runtime.metrics import classification_report
from training.data.beat_dataset import BeatDataset
from training.train import SCORED_CLASSES, RRScaler, class_weights

log = logging.getLogger(__name__)
_EPS = 1e-7


@dataclass(frozen=True)
class FitConfig:
    """How long a stage trains and how it selects its epoch (validation macro F1 over N, S, V, F)."""

    epochs: int = 60
    min_epochs: int = 5
    patience: int = 10
    batch_size: int = 256
    learning_rate: float = 2e-3
    class_weight_power: float = 0.5
    max_class_weight: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise ValueError("epochs, patience and batch_size must be >= 1")
        if not 1 <= self.min_epochs <= self.epochs:
            raise ValueError(f"min_epochs must be in [1, epochs={self.epochs}], got {self.min_epochs}")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")


@dataclass
class FitResult:
    best_epoch: int
    best_val_macro_f1: float
    history: list[dict] = field(default_factory=list)


def soft_targets(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the teacher's probabilities softened at temperature T (logits up to a constant)."""
    z = np.log(np.clip(probs, _EPS, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def packed_targets(labels: np.ndarray, cfg: FitConfig, soft: np.ndarray | None = None) -> np.ndarray:
    """(n, 2k) float32: class-weighted one-hot labels, then soft targets (zeros without a teacher)."""
    k = len(AAMI_CLASSES)
    weights = class_weights(labels, k, cfg.class_weight_power, cfg.max_class_weight)
    hard = np.zeros((labels.size, k), np.float32)
    hard[np.arange(labels.size), labels] = np.array([weights[int(c)] for c in labels], np.float32)
    return np.concatenate([hard, soft if soft is not None else np.zeros_like(hard)], axis=1)


def distillation_loss(alpha: float, temperature: float) -> Callable:
    """``alpha * weighted CE(labels, p) + (1 - alpha) * T^2 * KL(teacher_T || student_T)`` on packed targets.

    The student outputs softmax probabilities; its tempered distribution is softmax(log p / T). T^2 keeps
    the soft term's gradients on the scale of the hard term's as T changes.
    """
    if not 0 <= alpha <= 1 or temperature <= 0:
        raise ValueError(f"need 0 <= alpha <= 1 and temperature > 0, got {alpha}, {temperature}")

    def loss(y_true, y_pred):
        k = y_pred.shape[-1]
        hard, soft = y_true[:, :k], y_true[:, k:]
        log_p = tf.math.log(tf.clip_by_value(y_pred, _EPS, 1.0))
        ce = -tf.reduce_sum(hard * log_p, axis=-1)
        if alpha == 1:
            return ce
        log_pt = tf.nn.log_softmax(log_p / temperature, axis=-1)
        kl = tf.reduce_sum(soft * (tf.math.log(tf.clip_by_value(soft, _EPS, 1.0)) - log_pt), axis=-1)
        return alpha * ce + (1 - alpha) * temperature ** 2 * kl

    return loss


def model_inputs(data: BeatDataset, scaler: RRScaler) -> list[np.ndarray]:
    return [data.waves[..., None].astype(np.float32), scaler(data.rr)]


def validation_report(model: Any, val: BeatDataset, scaler: RRScaler) -> dict:
    probs = model.predict(model_inputs(val, scaler), batch_size=2048, verbose=0)
    return classification_report(val.labels, np.argmax(probs, axis=1), AAMI_CLASSES, macro_over=SCORED_CLASSES)


def fit_selected(model: Any, train: BeatDataset, val: BeatDataset, scaler: RRScaler, targets: np.ndarray,
                 cfg: FitConfig, callbacks: list | None = None, label: str = "") -> FitResult:
    """Train ``model`` (already compiled with a packed-target loss) one epoch at a time; keep the weights of
    the best validation macro F1 from ``min_epochs`` on, stop after ``patience`` epochs without progress.

    A plain loop instead of a framework callback, so Keras 3 and tf_keras (QAT) models share it.
    """
    x = model_inputs(train, scaler)
    history: list[dict] = []
    best = FitResult(0, -1.0, history)
    best_weights = None
    for epoch in range(1, cfg.epochs + 1):
        hist = model.fit(x, targets, batch_size=cfg.batch_size, epochs=1, shuffle=True, verbose=0,
                         callbacks=callbacks or [])
        rep = validation_report(model, val, scaler)
        f1 = rep["macro_f1"] or 0.0
        history.append({"epoch": epoch, "loss": float(hist.history["loss"][-1]), "val_macro_f1": f1,
                        "val_accuracy": rep["accuracy"]})
        log.info("%s epoch %d loss %.4f val macro F1 %.4f", label, epoch, history[-1]["loss"], f1)
        if epoch < cfg.min_epochs:
            continue
        if f1 > best.best_val_macro_f1:
            best.best_epoch, best.best_val_macro_f1 = epoch, f1
            best_weights = [w.copy() for w in model.get_weights()]
        elif epoch - best.best_epoch >= cfg.patience:
            break
    if best_weights is not None:
        model.set_weights(best_weights)
    return best
