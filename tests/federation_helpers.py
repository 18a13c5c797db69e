"""Deterministic devices for federation tests over a real broker.

The trainer is the only stand-in: each device's delta is a fixed function of the global weights, so
the expected global model after any number of rounds can be computed in-process with the same
strategy code. Broker, wire format, chunking, aggregator and device client are the real ones.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from broker.fed_messages import GlobalModel, LocalUpdate
from training.federated.strategies import ClientUpdate, FedAvg

SHAPES = [(7, 1, 8), (8,), (64, 32)]
REGISTRY = {"dev-a": 11, "dev-b": 12, "dev-c": 13}


def initial_weights() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=s).astype(np.float32) for s in SHAPES]


def delta_for(k: int, weights: list[np.ndarray]) -> list[np.ndarray]:
    return [(np.float32(0.01 * (k + 1)) - np.float32(0.1) * w).astype(np.float32) for w in weights]


class FixedUpdater:
    """Device k's deterministic 'training'; with ``gate`` it waits until the test opens it."""

    def __init__(self, k: int, gate: threading.Event | None = None) -> None:
        self.k, self.gate = k, gate
        self.calls = 0

    def fit(self, model: GlobalModel) -> LocalUpdate:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(timeout=120)
        return LocalUpdate(delta_for(self.k, model.weights), num_examples=10 * (self.k + 1), local_steps=self.k + 1,
                           train_loss=0.5)


def expected_fedavg(rounds: int, participants: list[list[int]] | None = None) -> list[np.ndarray]:
    """The in-process FedAvg of the same deltas; ``participants[r]`` lists device indices of round r."""
    weights = initial_weights()
    for r in range(rounds):
        ks = participants[r] if participants else range(len(REGISTRY))
        updates = [ClientUpdate(f"d{k}", delta_for(k, weights), 10 * (k + 1), k + 1) for k in ks]
        weights = FedAvg().aggregate(weights, updates)
    return weights


def wait_until(predicate, timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def run_to_end(aggregator, devices, timeout_s: float = 120.0):
    """Start the devices and the aggregator service, wait for its last round, stop the devices; its result."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=aggregator.run()), daemon=True)
    for d in devices:
        d.start()
    thread.start()
    thread.join(timeout_s)
    for d in devices:
        d.stop()
    assert not thread.is_alive() and "result" in box, "aggregator did not finish"
    return box["result"]
