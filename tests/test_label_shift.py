"""Label-shift correction of the local loss (``training.federated.label_shift``): a device trains
``p·r / Σ p·r`` with r = its class frequencies over the fleet's, so a class it has no example of is left
alone (the S output is not pushed down by a device holding only N and V beats)."""
from __future__ import annotations

import numpy as np
import pytest

from broker.fed_messages import GlobalModel, RoundPlan
from training.config import ModelConfig
from training.federated.device_trainer import KerasDeviceUpdater
from training.federated.label_shift import output_scale, prior_ratio
from training.federated.local_training import LocalConfig, LocalTrainer
from training.model import build_classifier


def test_prior_ratio_is_local_over_fleet_frequency_and_zero_for_absent_classes():
    fleet = np.array([800, 100, 100, 0, 0])
    labels = np.array([0] * 6 + [2] * 4)  # 60 % N, 40 % V, no S
    np.testing.assert_allclose(prior_ratio(labels, fleet), [0.6 / 0.8, 0.0, 4.0, 0.0, 0.0], rtol=1e-6)
    with pytest.raises(ValueError):
        prior_ratio(np.array([3]), fleet)  # a class the fleet never counted
    with pytest.raises(ValueError):
        prior_ratio(np.array([], int), fleet)
    with pytest.raises(ValueError):
        prior_ratio(labels, np.zeros(5))


def test_output_scale_floors_absent_classes_relative_to_their_fleet_frequency():
    ratio = np.array([0.75, 0.0, 4.0, 0.0, 0.0])
    np.testing.assert_allclose(output_scale(ratio, 0.0), [0.1875, 0, 1, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(output_scale(ratio, 0.5), [0.1875, 0.125, 1, 0.125, 0.125], rtol=1e-6)
    with pytest.raises(ValueError):
        output_scale(ratio, 1.5)
    with pytest.raises(ValueError):
        LocalConfig(label_shift=True, label_shift_floor=-0.1)


def _output_change(label_shift: bool, prior: np.ndarray | None, floor: float = 0.0) -> np.ndarray:
    """How much each class's output unit (kernel column and bias) moved in one local round."""
    model = build_classifier(100, 7, 5, ModelConfig(dropout=0.0))
    rng = np.random.default_rng(0)
    inputs = {"wave": rng.normal(size=(48, 100, 1)).astype(np.float32),
              "rr": rng.normal(size=(48, 7)).astype(np.float32)}
    labels = np.array([0, 2] * 24)  # N and V only
    w0 = [w.copy() for w in model.get_weights()]
    device = KerasDeviceUpdater("d", LocalTrainer(model), inputs, labels, seed=3, prior_ratio=prior)
    local = {"epochs": 2, "batch_size": 16, "learning_rate": 0.3, "label_shift": label_shift,
             "label_shift_floor": floor}
    delta = device.fit(GlobalModel(RoundPlan(1, ("d",), local, "float32", None, False), w0, None)).delta
    kernel, bias = delta[-2], delta[-1]
    return np.abs(kernel).sum(axis=0) + np.abs(bias)


@pytest.mark.slow
def test_a_device_leaves_the_outputs_of_classes_it_has_no_example_of_alone():
    prior = prior_ratio(np.array([0, 2] * 24), np.array([800, 100, 100, 10, 1]))
    corrected = _output_change(True, prior)
    plain = _output_change(False, prior)  # the same device without the correction pushes S, F, Q down
    assert np.all(plain[[1, 3, 4]] > 1e-3)
    # S, F, Q: analytically untouched (round-off of the renormalised softmax only)
    assert np.all(corrected[[1, 3, 4]] < 1e-6 * plain[[1, 3, 4]].min() + 1e-7)
    assert corrected[0] > 1e-3 and corrected[2] > 1e-3
    floored = _output_change(True, prior, floor=0.5)  # with a floor the absent classes move again
    assert np.all(floored[[1, 3, 4]] > 1e-3)


def test_a_device_without_a_class_prior_refuses_the_correction():
    model = build_classifier(100, 7, 5, ModelConfig(dropout=0.0))
    inputs = {"wave": np.zeros((4, 100, 1), np.float32), "rr": np.zeros((4, 7), np.float32)}
    device = KerasDeviceUpdater("d", LocalTrainer(model), inputs, np.zeros(4, int), seed=1)
    plan = RoundPlan(1, ("d",), {"epochs": 1, "label_shift": True}, "float32", None, False)
    with pytest.raises(ValueError, match="no class prior"):
        device.fit(GlobalModel(plan, model.get_weights(), None))
