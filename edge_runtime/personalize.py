"""Personalization without TensorFlow: retrain the classifier's last layer on this patient's beats.

Inter-patient ECG is hard because each heart and electrode placement is different; a few beats that a
clinician confirmed are enough to move the decision boundary of the final layer. The int8 model stays
as it is and computes the 32 hidden features (read from the interpreter, dequantized); the head
(32 -> classes, softmax) becomes a float numpy layer, started from the model's own dequantized head
and trained by gradient descent with an L2 pull back towards it (few labels must not undo the
population model). The head delta is what a device would send as a federated update.
"""
from __future__ import annotations

import threading

from dataclasses import dataclass

import numpy as np

from broker.fed_messages import GlobalModel, LocalUpdate
from edge_runtime.classifier import BeatClassifier
from edge_runtime.interpreter import make_interpreter


@dataclass(frozen=True)
class HeadConfig:
    steps: int = 300
    learning_rate: float = 0.5
    #: Weight of ||W - W_population||² + ||b - b_population||²: keeps the population model's knowledge.
    l2_to_population: float = 1e-2
    #: Classes weighted by inverse frequency among the labelled beats (rare ectopics matter most).
    balance_classes: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.learning_rate <= 0 or self.l2_to_population < 0:
            raise ValueError("steps >= 1, learning_rate > 0 and l2_to_population >= 0 required")


class HeadFeatures:
    """The int8 model up to its last fully connected layer: hidden features and the population head."""

    def __init__(self, classifier: BeatClassifier, model_content: bytes) -> None:
        self.classifier = classifier
        self._interp = make_interpreter(model_content, preserve_all_tensors=True)
        ops = self._interp._get_ops_details()  # LiteRT's op table: the public API has no other way
        details = {t["index"]: t for t in self._interp.get_tensor_details()}
        fcs = [o for o in ops if o["op_name"] == "FULLY_CONNECTED"]
        if not fcs or ops[-1]["op_name"] != "SOFTMAX" or ops[-1]["inputs"][0] != fcs[-1]["outputs"][0]:
            raise ValueError("personalization needs a model that ends in FULLY_CONNECTED -> SOFTMAX")
        hidden, weights, bias = (details[i] for i in fcs[-1]["inputs"][:3])
        self._hidden_index = hidden["index"]
        self._hidden_q = hidden["quantization_parameters"]
        w_q = weights["quantization_parameters"]
        w = self._interp.get_tensor(weights["index"]).astype(np.float64)
        w_scale = np.asarray(w_q["scales"], np.float64).reshape(-1, 1)
        self.population_w = ((w - np.asarray(w_q["zero_points"]).reshape(-1, 1)) * w_scale).T  # (hidden, classes)
        b_q = bias["quantization_parameters"]
        self.population_b = self._interp.get_tensor(bias["index"]).astype(np.float64) * np.asarray(b_q["scales"])
        self._inputs = {len(d["shape"]): d for d in self._interp.get_input_details()}
        #: One interpreter, two callers on a deployed device: the beat loop (classifying with the personalized
        #: head) and the label thread (retraining it). LiteRT interpreters are not thread-safe.
        self._lock = threading.Lock()

    def features(self, waves: np.ndarray, rr: np.ndarray) -> np.ndarray:
        qw, qr = self.classifier.quantize_inputs(waves, rr)
        out = np.empty((len(qw), self.population_w.shape[0]))
        scale = float(self._hidden_q["scales"][0])
        zero = float(self._hidden_q["zero_points"][0])
        with self._lock:
            for i in range(len(qw)):  # batch 1, as on the device
                self._interp.set_tensor(self._inputs[3]["index"], qw[i][None, :, None])
                self._interp.set_tensor(self._inputs[2]["index"], qr[i][None, :])
                self._interp.invoke()
                out[i] = (self._interp.get_tensor(self._hidden_index)[0].astype(np.float64) - zero) * scale
        return out


@dataclass(frozen=True)
class Head:
    w: np.ndarray  # (hidden, classes)
    b: np.ndarray  # (classes,)

    def proba(self, features: np.ndarray) -> np.ndarray:
        return _softmax(features @ self.w + self.b)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.argmax(features @ self.w + self.b, axis=1)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def train_head(features: np.ndarray, labels: np.ndarray, start: Head, cfg: HeadConfig = HeadConfig()) -> Head:
    """Full-batch gradient descent on weighted cross-entropy + L2 towards ``start``."""
    n_classes = start.w.shape[1]
    y = np.eye(n_classes)[labels]
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    weight = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / np.count_nonzero(counts), 0.0) \
        if cfg.balance_classes else np.ones(n_classes)
    sample_w = weight[labels] / len(labels)
    w, b = start.w.copy(), start.b.copy()
    for _ in range(cfg.steps):
        grad_z = (_softmax(features @ w + b) - y) * sample_w[:, None]
        w -= cfg.learning_rate * (features.T @ grad_z + cfg.l2_to_population * (w - start.w))
        b -= cfg.learning_rate * (grad_z.sum(axis=0) + cfg.l2_to_population * (b - start.b))
    return Head(w, b)


class HeadUpdater:
    """A federated ``LocalUpdater`` for devices without TensorFlow: the round's delta is the head only.

    The int8 model installed on the device computes the hidden features of the patient's labelled beats
    once; each round the head is retrained from the global model's float head (the last two tensors of
    the MODEL message) and the difference is sent, zeros everywhere else.
    """

    def __init__(self, features: HeadFeatures, waves: np.ndarray, rr: np.ndarray, labels: np.ndarray,
                 cfg: HeadConfig = HeadConfig()) -> None:
        if len(labels) == 0:
            raise ValueError("head training needs labelled beats")
        self._features = features.features(waves, rr)
        self._labels = np.asarray(labels, np.int64)
        self.cfg = cfg

    def fit(self, model: GlobalModel) -> LocalUpdate:
        w0, b0 = (np.asarray(t, np.float64) for t in model.weights[-2:])
        if w0.shape != (self._features.shape[1], b0.size):
            raise ValueError(f"global head {w0.shape} does not fit {self._features.shape[1]} hidden features")
        head = train_head(self._features, self._labels, Head(w0, b0), self.cfg)
        delta = [np.zeros_like(w, dtype=np.float32) for w in model.weights[:-2]]
        delta += [(head.w - w0).astype(np.float32), (head.b - b0).astype(np.float32)]
        return LocalUpdate(delta, num_examples=int(self._labels.size), local_steps=self.cfg.steps)
