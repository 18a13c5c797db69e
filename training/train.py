"""Centralized training: the reference every federated result is compared with."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import keras
import numpy as np

from edge_runtime.aami import AAMI_CLASSES
from edge_runtime.metrics import classification_report
from edge_runtime.rr_features import standardise_rr
from training.calibration import fit_logit_offsets, fold_offsets, prior_offsets
from training.config import TrainConfig
from training.data.beat_dataset import BeatDataset
from training.model import build_classifier

log = logging.getLogger(__name__)
#: Macro F1 for model selection and reporting: Q has too few beats (8 in DS1) to be scored.
SCORED_CLASSES = ("N", "S", "V", "F")


@dataclass(frozen=True)
class RRScaler:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, rr: np.ndarray) -> RRScaler:
        return cls(rr.mean(axis=0).astype(np.float32), np.maximum(rr.std(axis=0), 1e-6).astype(np.float32))

    def __call__(self, rr: np.ndarray) -> np.ndarray:
        return standardise_rr(rr, self.mean, self.std)


@dataclass
class TrainedModel:
    model: keras.Model
    rr_scaler: RRScaler
    config: TrainConfig
    history: list[dict] = field(default_factory=list)  # one row per epoch
    best_epoch: int = 0
    #: Logit offsets already folded into the output bias (empty until ``calibrate`` folds some in).
    logit_offsets: tuple[float, ...] = ()

    def predict_proba(self, data: BeatDataset) -> np.ndarray:
        return predict_proba(self.model, data, self.rr_scaler)


def predict_proba(model: keras.Model, data: BeatDataset, scaler: RRScaler) -> np.ndarray:
    return model.predict([data.waves[..., None], scaler(data.rr)], batch_size=2048, verbose=0)


def evaluate_keras(model: keras.Model, data: BeatDataset, scaler: RRScaler) -> dict:
    """Classification report of a Keras model: the epoch- or round-selection score on validation."""
    pred = np.argmax(predict_proba(model, data, scaler), axis=1)
    return classification_report(data.labels, pred, AAMI_CLASSES, macro_over=SCORED_CLASSES)


def class_weights(labels: np.ndarray, n_classes: int, power: float, cap: float) -> dict[int, float]:
    """Weights (n / (k n_c))^power for the classes present, capped so 8 Q beats cannot dominate."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    present = counts > 0
    k = present.sum()
    weights = {}
    for c in range(n_classes):
        weights[c] = float(min(cap, (counts.sum() / (k * counts[c])) ** power)) if present[c] else 1.0
    return weights


class _SelectOnValidation(keras.callbacks.Callback):
    """Keeps the weights of the best validation macro F1 from ``min_epochs`` on; stops after ``patience``."""

    def __init__(self, val: BeatDataset, scaler: RRScaler, patience: int, min_epochs: int,
                 history: list[dict]) -> None:
        super().__init__()
        self._val, self._scaler = val, scaler
        self._patience = patience
        self._min_epochs = min_epochs
        self._history = history
        self.best_f1 = -1.0
        self.best_epoch = 0
        self._best_weights = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        rep = evaluate_keras(self.model, self._val, self._scaler)
        f1 = rep["macro_f1"] or 0.0
        row = {"epoch": epoch + 1, "loss": float((logs or {}).get("loss", np.nan)), "val_macro_f1": f1,
               "val_accuracy": rep["accuracy"]}
        self._history.append(row)
        log.info("epoch %d loss %.4f val macro F1 %.4f", row["epoch"], row["loss"], f1)
        if epoch + 1 < self._min_epochs:
            return
        if f1 > self.best_f1:
            self.best_f1, self.best_epoch = f1, epoch + 1
            self._best_weights = self.model.get_weights()
        elif epoch + 1 - self.best_epoch >= self._patience:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)


def train_centralized(train: BeatDataset, val: BeatDataset, cfg: TrainConfig, verbose: int = 2) -> TrainedModel:
    """Train on ``train``, select the epoch on ``val`` (held-out patients for the inter-patient protocol)."""
    if len(train) == 0 or len(val) == 0:
        raise ValueError("training and validation sets must both hold beats")
    cfg.check_rr_width(train.rr.shape[1])
    keras.utils.set_random_seed(cfg.seed)
    scaler = RRScaler.fit(train.rr)
    model = build_classifier(train.waves.shape[1], train.rr.shape[1], len(AAMI_CLASSES), cfg.model)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="sparse_categorical_crossentropy")
    history: list[dict] = []
    selector = _SelectOnValidation(val, scaler, cfg.patience, cfg.min_epochs, history)
    model.fit(
        [train.waves[..., None], scaler(train.rr)],
        train.labels.astype(np.int32),
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        class_weight=class_weights(train.labels, len(AAMI_CLASSES), cfg.class_weight_power, cfg.max_class_weight),
        callbacks=[selector],
        shuffle=True,
        verbose=verbose,
    )
    trained = TrainedModel(model=model, rr_scaler=scaler, config=cfg, history=history, best_epoch=selector.best_epoch)
    return calibrate(trained, train.labels, val)


def calibrate(trained: TrainedModel, train_labels: np.ndarray, val: BeatDataset) -> TrainedModel:
    """Fold the logit offsets of ``trained.config.logit_offsets`` into the output bias (in place): "prior"
    from the class weights of ``train_labels`` (the same counts the loss used; a federation has them as
    fleet-wide sums), "fitted" on the validation patients, "none" leaves the model as it is."""
    cfg = trained.config
    if cfg.logit_offsets == "none" or trained.logit_offsets:  # nothing to do, or already folded in
        return trained
    if cfg.logit_offsets == "prior":
        weights = class_weights(train_labels, len(AAMI_CLASSES), cfg.class_weight_power, cfg.max_class_weight)
        offsets = prior_offsets(np.array([weights[c] for c in range(len(AAMI_CLASSES))]))
    else:
        offsets = fit_logit_offsets(trained.predict_proba(val), val.labels, AAMI_CLASSES, SCORED_CLASSES)
    fold_offsets(trained.model, offsets)
    trained.logit_offsets = tuple(float(o) for o in offsets)
    log.info("logit offsets (%s) folded into the output bias: %s", cfg.logit_offsets,
             dict(zip(AAMI_CLASSES, np.round(offsets, 3))))
    return trained
