"""DP-SGD on a device with few records: a Poisson batch that samples nobody is still a step (the noise alone),
as the accountant assumes; before, the per-record jacobian of an empty batch failed and the round crashed."""
import numpy as np

from edge_runtime.dp_noise import make_noise
from training.federated.local_training import LocalConfig, LocalTrainer
from training.tasks.tabular import FEATURES_INPUT, TabularTask


def _update(noise: float):
    task = TabularTask(max_persons=8)
    train = task.load("train")
    model = task.build_model(train)
    w0 = [w.copy() for w in model.get_weights()]
    # 2 records at q 0.1: P(empty batch) = 0.81 per step, 10 steps
    cfg = LocalConfig(epochs=1, learning_rate=1.0, dpsgd_clip=0.1, dpsgd_rate=0.1, dpsgd_noise=noise)
    inputs = {FEATURES_INPUT: train.inputs[FEATURES_INPUT][:2]}
    update, _ = LocalTrainer(model, task.loss()).run("h", w0, inputs, train.targets[:2], cfg,
                                                     np.random.default_rng(0), noise=make_noise("seeded", 3))
    return update


def test_empty_poisson_batches_add_the_noise_and_do_not_fail():
    rng = np.random.default_rng(3)
    empties = sum(not (rng.random(2) < 0.1).any() for _ in range(10))  # the trainer's own draws, replayed
    assert empties >= 5
    noisy = _update(4.0)
    assert noisy.local_steps == 10
    moved = np.concatenate([d.ravel() for d in noisy.delta])
    assert np.isfinite(moved).all() and np.abs(moved).max() > 0.05  # σ·C/(q·n) = 2 per step: noise was added
