"""Gradient clipping in local SGD (the SCAFFOLD divergence fix): each step is bounded, and off means off."""
import numpy as np
import pytest

from training.config import TrainConfig
from training.federated.local_training import LocalConfig, LocalTrainer
from training.federated.registry import make_strategy
from training.federated.robust import delta_norm
from training.model import build_classifier

pytestmark = pytest.mark.slow


def _run(cfg: LocalConfig, control_shift: float = 0.0):
    model = build_classifier(100, 7, 5, TrainConfig(seed=0).model)
    rng = np.random.default_rng(0)
    wave, rr = rng.normal(size=(64, 100, 1)).astype(np.float32), rng.normal(size=(64, 7)).astype(np.float32)
    labels = rng.integers(0, 5, 64)
    w0 = [w.copy() for w in model.get_weights()]
    trainer = LocalTrainer(model)
    server_c = [np.full_like(w, control_shift) for w in w0] if control_shift else None
    update, _ = trainer.run("d", w0, {"wave": wave, "rr": rr}, labels, cfg, np.random.default_rng(1), server_c, None)
    return update


def test_each_local_step_is_clipped_to_the_norm():
    free = _run(LocalConfig(epochs=1, batch_size=64, learning_rate=0.3))
    clipped = _run(LocalConfig(epochs=1, batch_size=64, learning_rate=0.3, grad_clip=0.01))
    assert delta_norm(free.delta) > 0.3 * 0.01 * 2  # the bound below binds
    assert delta_norm(clipped.delta) <= 0.3 * 0.01 * (1 + 1e-4)  # one step of at most lr x clip
    # a huge SCAFFOLD correction (c - c_i = 50 per weight) is what sent devices to NaN; clipped it stays bounded
    wild = _run(LocalConfig(epochs=2, batch_size=16, learning_rate=0.3, grad_clip=5.0), control_shift=50.0)
    assert delta_norm(wild.delta) <= 0.3 * 5.0 * 8 * (1 + 1e-4)


def test_scaffold_asks_devices_to_clip_and_zero_turns_it_off():
    assert make_strategy("scaffold", num_devices=3).client_config() == {"grad_clip": 5.0}
    assert make_strategy("scaffold", num_devices=3, grad_clip=0).client_config() == {}
    with pytest.raises(ValueError):
        LocalConfig(grad_clip=-1)
