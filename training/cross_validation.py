"""Leave-records-out cross-validation over DS1: the selection protocol that sees every DS1 patient.

A held-out set of four or five DS1 records decides little (docs/classifier.md: the prior rule won there and
lost on DS2). Here every DS1 record is held out once: DS1 is split into ``folds`` groups of whole patients,
each group is scored by a model trained on the others, and the held-out predictions are pooled into one
report over all 22 DS1 patients per seed. Models train a fixed number of epochs (no epoch is chosen on the
held-out fold), and decision rules (logit offsets) are applied after the fact to the same probabilities,
so one training run scores every rule. DS2 is never loaded.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from edge_runtime.aami import AAMI_CLASSES
from edge_runtime.metrics import classification_report
from training.calibration import prior_offsets
from training.config import TrainConfig
from training.data.beat_dataset import BeatDataset
from training.data.protocols import ds1_folds
from training.data.splits import DS1
from training.train import (
    SCORED_CLASSES,
    TrainedModel,
    class_weights,
    train_centralized,
)

log = logging.getLogger(__name__)

#: Decision rules scored on the pooled held-out probabilities (``training.calibration``).
RULES = ("none", "prior")

#: A fold's trainer: (training beats, held-out beats on the training leads, config) -> the model to score with,
#: its ``history`` one row per epoch or round with ``val_macro_f1`` on the held-out fold. It must choose nothing
#: on the held-out fold (last epoch / last round).
FoldFit = Callable[[BeatDataset, BeatDataset, TrainConfig], TrainedModel]


def fit_centralized(train: BeatDataset, val: BeatDataset, cfg: TrainConfig) -> TrainedModel:
    """Centralized training for exactly ``cfg.epochs`` (``min_epochs`` = ``epochs``: the last epoch is kept)."""
    return train_centralized(train, val, cfg, verbose=0)


@dataclass(frozen=True)
class FoldPredictions:
    """Held-out probabilities of one seed, pooled over the folds, with what is needed to score them."""

    seed: int
    folds: tuple[tuple[str, ...], ...]
    probs: np.ndarray  # (n, classes) float32
    labels: np.ndarray  # (n,) int8
    record: np.ndarray  # (n,) str
    lead: np.ndarray  # (n,) str
    offsets: dict[str, np.ndarray]  # rule -> (n, classes): the offsets of the fold that scored each row
    seconds: float
    #: Per fold, the held-out macro F1 after every epoch or round (on the training leads): the last rounds'
    #: mean is a federated selection score that does not rest on a single round.
    fold_curves: tuple[tuple[float, ...], ...] = ()

    def report(self, rule: str, lead: str) -> dict:
        rows = self.lead == lead
        pred = np.argmax(np.log(np.maximum(self.probs[rows], 1e-12)) + self.offsets[rule][rows], axis=1)
        return classification_report(self.labels[rows], pred, AAMI_CLASSES, macro_over=SCORED_CLASSES)

    def fold_macro_f1(self, rule: str, lead: str) -> list[float | None]:
        """Macro F1 per fold: the spread the pooled figure hides."""
        scores = []
        for fold in self.folds:
            rows = np.isin(self.record, fold) & (self.lead == lead)
            pred = np.argmax(np.log(np.maximum(self.probs[rows], 1e-12)) + self.offsets[rule][rows], axis=1)
            scores.append(classification_report(self.labels[rows], pred, AAMI_CLASSES,
                                                 macro_over=SCORED_CLASSES)["macro_f1"])
        return scores


def cross_validate_seed(data: BeatDataset, cfg: TrainConfig, folds: int,
                        records: tuple[str, ...] = DS1, fit: FoldFit = fit_centralized) -> FoldPredictions:
    """One seed: every DS1 fold held out once, models trained by ``fit`` (centralized for exactly
    ``cfg.epochs``, or federated rounds) on the rest.

    ``data`` holds DS1 beats with ``cfg.features``' columns; training uses ``cfg.training_lead_tags()``,
    scoring the clean beats of every lead loaded (MLII, and the second channel when loaded)."""
    if set(np.unique(data.record)) - set(records):
        raise ValueError("cross-validation takes beats of its DS1 records only (DS2 is the untouched test set)")
    fixed = replace(cfg, min_epochs=cfg.epochs, logit_offsets="none")  # the last epoch: nothing chosen on the fold
    split = ds1_folds(cfg.seed, folds, tuple(records))
    scored = data.of_leads([lead for lead in ("MLII", "other") if lead in set(data.lead)])
    probs = np.zeros((len(scored), len(AAMI_CLASSES)), np.float32)
    offsets = {rule: np.zeros_like(probs) for rule in RULES}
    curves = []
    t0 = time.perf_counter()
    for i, fold in enumerate(split, 1):
        held = np.isin(scored.record, fold)
        train = data.subset(np.flatnonzero(~np.isin(data.record, fold))).of_leads(cfg.training_lead_tags())
        val = scored.subset(np.flatnonzero(held))
        log.info("seed %d fold %d/%d: hold out %s (%d beats), train on %d beats", cfg.seed, i, len(split),
                 ",".join(fold), int(held.sum()), len(train))
        trained = fit(train, val.of_leads(cfg.leads), fixed)
        probs[held] = trained.predict_proba(val)
        curves.append(tuple(float(row["val_macro_f1"] or 0.0) for row in trained.history))
        weights = class_weights(train.labels, len(AAMI_CLASSES), cfg.class_weight_power, cfg.max_class_weight)
        offsets["prior"][held] = prior_offsets(np.array([weights[c] for c in range(len(AAMI_CLASSES))]))
    return FoldPredictions(seed=cfg.seed, folds=split, probs=probs, labels=scored.labels, record=scored.record,
                           lead=scored.lead, offsets=offsets, seconds=time.perf_counter() - t0,
                           fold_curves=tuple(curves))
