"""Federating the head of an exported int8 model: what `pulsewire aggregate --model` runs.

Devices of a deployed fleet run the int8 model and cannot train its convolutional body (no
TensorFlow, and int8); what they can train with numpy is the final dense layer on the model's hidden
features (``edge_runtime.personalize``). So a fleet started from an export federates exactly that
head: the global model is ``[W (hidden, classes), b]``, dequantized from the ``.tflite`` with its
metadata, and a held-out set is scored through the int8 body with the aggregated head. No TensorFlow.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.classifier import BeatClassifier
from edge_runtime.metrics import classification_report
from edge_runtime.personalize import Head, HeadFeatures


def load_head_model(model_path: Path) -> tuple[HeadFeatures, list[np.ndarray]]:
    """The int8 model's feature extractor and its (population) head as the initial global weights."""
    model_path = Path(model_path)
    classifier = BeatClassifier.from_file(model_path)
    features = HeadFeatures(classifier, model_path.read_bytes())
    return features, [features.population_w.astype(np.float32), features.population_b.astype(np.float32)]


def head_evaluator(features: HeadFeatures, waves: np.ndarray, rr: np.ndarray, labels: np.ndarray,
                   prefix: str = "val"):
    """An ``Evaluator`` for the aggregator: macro F1 (N, S, V, F) and accuracy of the head on held-out beats.
    The int8 hidden features are computed once; each round costs one matrix product."""
    hidden = features.features(waves, rr)
    classes = features.classifier.metadata.class_names
    macro = [c for c in ("N", "S", "V", "F") if c in classes]

    def evaluate(weights: list[np.ndarray]) -> dict[str, float]:
        predicted = Head(np.asarray(weights[-2], np.float64), np.asarray(weights[-1], np.float64)).predict(hidden)
        report = classification_report(labels, predicted, classes, macro_over=macro)
        return {f"{prefix}_macro_f1": float(report["macro_f1"]), f"{prefix}_accuracy": float(report["accuracy"])}

    return evaluate


def save_head(path: Path, weights: list[np.ndarray], model_sha256: str) -> None:
    """The aggregated head with the hash of the int8 model whose features it belongs to."""
    np.savez(path, w=weights[-2], b=weights[-1], model_sha256=np.asarray(model_sha256))
