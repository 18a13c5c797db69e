"""The aggregator's running sum on its own: the round's rule, an outlier read back and subtracted exactly, the
same aggregate as the strategy on the individual updates, and no sum for a strategy that needs every update."""
from __future__ import annotations

import numpy as np

from training.federated.aggregator_config import RoundPolicy
from training.federated.round_engine import RoundEngine
from training.federated.round_sum import RoundSum
from training.federated.strategies import ClientUpdate, FedAvg

WEIGHTS = [np.zeros((3, 2), np.float32), np.zeros(4, np.float32)]
SIZE = 10


def _update(device: str, value: float, examples: int) -> ClientUpdate:
    return ClientUpdate(device, [np.full((3, 2), value, np.float32), np.full(4, -value, np.float32)], examples, 1)


def test_an_outlier_is_subtracted_and_the_rest_aggregate_as_the_strategy_would():
    engine = RoundEngine(FedAvg(), ["a", "b", "c", "x"], RoundPolicy(), 2, WEIGHTS)
    updates = {"a": _update("a", 0.1, 10), "b": _update("b", 0.2, 30), "c": _update("c", -0.1, 20),
               "x": _update("x", 500.0, 10)}
    round_sum = RoundSum("fedavg", {}, dict)
    round_sum.restart(SIZE)

    added = [round_sum.add(u, offset) for offset, u in enumerate(updates.values())]
    reread: list[str] = []
    combined = round_sum.combined(engine, 50.0, lambda d: reread.append(d) or updates[d], WEIGHTS)

    assert added == [True] * 4 and reread == ["x"]
    assert engine.rejected == {"outlier_norm": 1}
    got = FedAvg().aggregate(WEIGHTS, combined)
    want = FedAvg().aggregate(WEIGHTS, [updates[d] for d in "abc"])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-6)


def test_the_rule_follows_the_rounds_arguments_and_a_strategy_without_one_keeps_the_updates():
    clip = {"clip": 1.0}
    dp = RoundSum("dp_fedavg", {"noise_multiplier": 0.0}, lambda: clip)
    median = RoundSum("median", {}, dict)
    dp.restart(SIZE)
    first = dp.rule
    clip["clip"] = 0.5  # adaptive clipping moved the clip: the next round's sum uses it
    dp.restart(SIZE)
    median.restart(SIZE)

    assert (first.clip, dp.rule.clip) == (1.0, 0.5) and dp.running.total.count == 0
    assert median.rule is None and median.running is None
    assert not median.add(_update("a", 0.1, 10), 0)
