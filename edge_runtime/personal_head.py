"""A device's own head: trained on its clinician labels, served instead of the population head, sent in rounds.

The int8 model keeps computing the hidden features (``edge_runtime.personalize.HeadFeatures``); the
head on top becomes a float numpy layer. ``HeadClassifier`` serves it with the classifier's interface,
so the runtime swaps it in between two beats. ``HeadLearner`` is the federated ``LocalUpdater`` of a
light (no TensorFlow) device: each round it retrains the global head on the labelled beats and
returns the delta; a device without labels, or whose wearer did not consent, declines the round.
The head is stored with the hash of the model it belongs to: a new model means retraining from the
labels, never a head on features it was not trained for.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from broker.fed_messages import GlobalModel, LocalUpdate
from edge_runtime.classifier import BeatClassifier
from edge_runtime.fed_client import RoundDeclined
from edge_runtime.labelled_beats import LabelStore
from edge_runtime.personalize import Head, HeadConfig, HeadFeatures, HeadUpdater, train_head

log = logging.getLogger(__name__)


class NoLabels(RoundDeclined):
    """Nothing to learn from yet: the device declines the round."""


class ConsentWithheld(RoundDeclined):
    """The wearer has not agreed to contribute head updates: the device declines every round."""


class BaseModel:
    """The installed int8 model: its classifier and the feature extractor for its head."""

    def __init__(self, content: bytes, classifier: BeatClassifier) -> None:
        self.classifier = classifier
        self.sha256 = hashlib.sha256(content).hexdigest()
        self.features = HeadFeatures(classifier, content)

    @property
    def population_head(self) -> Head:
        return Head(self.features.population_w.copy(), self.features.population_b.copy())


class HeadClassifier:
    """The base model's features with another head: the classifier interface the runtime needs."""

    def __init__(self, base: BaseModel, head: Head, tag: str = "personal") -> None:
        self.base, self.head = base, head
        self.metadata = replace(base.classifier.metadata,
                                model_version=f"{base.classifier.metadata.model_version}+{tag}")

    def predict_proba(self, waves: np.ndarray, rr: np.ndarray) -> np.ndarray:
        return self.head.proba(self.base.features.features(np.asarray(waves, np.float32),
                                                            np.asarray(rr, np.float32))).astype(np.float32)

    def predict(self, waves: np.ndarray, rr: np.ndarray) -> np.ndarray:
        return np.argmax(self.predict_proba(waves, rr), axis=1)


class HeadFile:
    """``head.npz``: the personalized head and the model hash it was trained for."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / "head.npz"

    def save(self, head: Head, model_sha256: str) -> None:
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, w=head.w, b=head.b, model_sha256=np.asarray(model_sha256))
        os.replace(tmp, self.path)

    def load(self, model_sha256: str) -> Head | None:
        if not self.path.is_file():
            return None
        with np.load(self.path) as data:
            if str(data["model_sha256"]) != model_sha256:
                log.info("stored head belongs to another model: retraining from the labels")
                return None
            return Head(data["w"], data["b"])


class HeadLearner:
    """The federated ``LocalUpdater`` of a device without TensorFlow, and its personalization."""

    def __init__(self, labels: LabelStore, base: BaseModel, cfg: HeadConfig = HeadConfig(),
                 consent: bool = False) -> None:
        self.labels, self.cfg, self.consent = labels, cfg, consent
        self._base = base
        self._lock = threading.Lock()

    @property
    def base(self) -> BaseModel:
        with self._lock:
            return self._base

    def set_base(self, base: BaseModel) -> None:
        with self._lock:
            self._base = base

    def personalize(self, start: Head | None = None) -> Head | None:
        """The base model's head retrained on every labelled beat (None without labels)."""
        base = self.base
        waves, rr, y = self.labels.training_set(base.classifier.metadata.class_names)
        if y.size == 0:
            return None
        return train_head(base.features.features(waves, rr), y, start or base.population_head, self.cfg)

    def fit(self, model: GlobalModel) -> LocalUpdate:
        if not self.consent:
            raise ConsentWithheld("the wearer has not consented to contributing head updates (--consent)")
        base = self.base
        waves, rr, y = self.labels.training_set(base.classifier.metadata.class_names)
        if y.size == 0:
            raise NoLabels("no clinician-labelled beats yet")
        return HeadUpdater(base.features, waves, rr, y, self.cfg).fit(model)
