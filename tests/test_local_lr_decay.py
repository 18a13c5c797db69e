"""Local learning-rate decay over rounds: the device reads the round number from the plan and trains with
``learning_rate * lr_decay ** (round - 1)``; nothing else in the round plan changes."""
import numpy as np
import pytest

from broker.fed_messages import GlobalModel, RoundPlan
from training.config import ModelConfig
from training.federated.device_trainer import KerasDeviceUpdater
from training.federated.local_training import LocalConfig, LocalTrainer
from training.model import build_classifier


def test_for_round_decays_the_learning_rate_geometrically():
    cfg = LocalConfig(learning_rate=0.3, lr_decay=0.5)
    assert cfg.for_round(1).learning_rate == pytest.approx(0.3)
    assert cfg.for_round(3).learning_rate == pytest.approx(0.075)
    assert cfg.for_round(3).epochs == cfg.epochs and cfg.for_round(3).lr_decay == 1.0
    assert LocalConfig().for_round(20).learning_rate == LocalConfig().learning_rate  # default: constant
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            LocalConfig(lr_decay=bad)
    with pytest.raises(ValueError):
        cfg.for_round(0)


@pytest.mark.slow
def test_a_device_trains_round_r_with_the_decayed_rate():
    """Round 2 with decay 0.5 moves the weights exactly as round 1 with half the learning rate (same data order)."""
    model = build_classifier(100, 7, 5, ModelConfig(dropout=0.0))  # no dropout: both runs see the same steps
    rng = np.random.default_rng(0)
    inputs = {"wave": rng.normal(size=(32, 100, 1)).astype(np.float32),
              "rr": rng.normal(size=(32, 7)).astype(np.float32)}
    labels = rng.integers(0, 5, 32)
    w0 = [w.copy() for w in model.get_weights()]
    trainer = LocalTrainer(model)

    def delta(round_: int, local: dict) -> list[np.ndarray]:
        device = KerasDeviceUpdater("d", trainer, inputs, labels, seed=7)
        plan = RoundPlan(round_, ("d",), local, "float32", None, False)
        return device.fit(GlobalModel(plan, [w.copy() for w in w0], None)).delta

    decayed = delta(2, {"epochs": 1, "batch_size": 32, "learning_rate": 0.2, "lr_decay": 0.5})
    halved = delta(1, {"epochs": 1, "batch_size": 32, "learning_rate": 0.1})
    full = delta(1, {"epochs": 1, "batch_size": 32, "learning_rate": 0.2})
    for a, b in zip(decayed, halved):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not all(np.allclose(a, b) for a, b in zip(decayed, full))
