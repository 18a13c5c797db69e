"""Label-shift correction of a device's local loss: why federated devices call S beats V.

A patient's device sees its own class mix: many hold hundreds of ventricular beats and not one
supraventricular beat. Trained as is, such a device learns "premature beat -> V" and pushes the S output
down on every beat, and FedAvg averages those pushes into the shared model (on DS1 the federated model
called 15-59 % of its own *training* devices' S beats V). Under label shift (same beats per class, another
class mix) a device's Bayes posterior is the fleet's times the ratio of priors,
``p_dev(c|x) ∝ p(c|x) · π_dev(c) / π_fleet(c)``. So the device fits that product to its labels and the
shared model ``p`` is left to learn the fleet-wide posterior, as the centralized model does (the
logit-adjustment idea of FedLC, Zhang et al. 2022, with the fleet prior as the target). A class with no
local example has ratio 0: the device's softmax is restricted to the classes it has (FedRS, Li & Zhan 2021);
a floor β keeps every class at least β times its fleet frequency, so a device still pushes down, more
gently, the classes it lacks. The fleet prior is the fleet-wide class count the class weights already come
from; the device's own counts never leave it. At inference nothing changes: the model is used as trained.
"""
from __future__ import annotations

import numpy as np


def prior_ratio(device_labels: np.ndarray, fleet_counts: np.ndarray) -> np.ndarray:
    """``π_dev / π_fleet`` per class (0 for a class the device has no example of). A class the fleet
    counted none of cannot occur on the device."""
    fleet = np.asarray(fleet_counts, np.float64)
    if fleet.ndim != 1 or np.any(fleet < 0) or fleet.sum() <= 0:
        raise ValueError(f"fleet class counts must be a 1-D array of non-negative counts, got {fleet_counts}")
    labels = np.asarray(device_labels)
    if labels.size == 0:
        raise ValueError("a device without labelled rows has no class prior")
    if labels.min() < 0 or labels.max() >= fleet.size or np.any(fleet[np.unique(labels)] == 0):
        raise ValueError("device labels outside the fleet's classes")
    local = np.bincount(labels, minlength=fleet.size) / labels.size
    return np.divide(local, fleet / fleet.sum(), out=np.zeros_like(local), where=fleet > 0).astype(np.float32)


def output_scale(ratio: np.ndarray, floor: float) -> np.ndarray:
    """The factors the device's loss multiplies the output probabilities by: ``max(ratio, floor)`` scaled so
    the largest is 1 (only ratios matter). Classes the fleet never saw (ratio exactly 0 from the fleet side)
    are indistinguishable here from locally absent ones and get the floor too; their output is never a target."""
    if not 0 <= floor <= 1:
        raise ValueError(f"the label-shift floor must be in [0, 1], got {floor}")
    scale = np.maximum(np.asarray(ratio, np.float64), floor)
    return (scale / scale.max()).astype(np.float32)
