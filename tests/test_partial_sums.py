"""Partial sums: any split of a round's updates over workers gives the single-worker sum bit for bit, and the
strategy's result on the sum matches the strategy on the individual updates; strategies that need every
update are refused with a message that says so."""
from __future__ import annotations

import numpy as np
import pytest

from training.federated.partial_sums import (INDIVIDUAL, PartialSum, SumOverflow, model_size, outliers, rule_for,
                                             to_fixed)
from training.federated.registry import make_strategy
from training.federated.strategies import ClientUpdate

SHAPES = [(7, 1, 8), (8,), (39, 32), (5,)]
SIZE = model_size([np.zeros(s) for s in SHAPES])


def _updates(n: int, seed: int, control: bool) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)
    return [ClientUpdate(f"d{i}", [rng.normal(0, 0.05, s).astype(np.float32) for s in SHAPES],
                         int(rng.integers(5, 500)), int(rng.integers(1, 20)),
                         [rng.normal(0, 0.01, s).astype(np.float32) for s in SHAPES] if control else None,
                         {"train_loss": float(rng.uniform(0.1, 2))}) for i in range(n)]


def _sum(rule, updates, order_seed: int | None = None) -> PartialSum:
    total = PartialSum(SIZE, rule.with_control)
    order = np.random.default_rng(order_seed).permutation(len(updates)) if order_seed is not None else range(
        len(updates))
    for i in order:
        total.add(rule.contribution(updates[i], SIZE))
    return total


CASES = [("fedavg", {}), ("fedprox", {"proximal_mu": 0.1}), ("fedavgm", {}), ("fedadam", {}), ("fednova", {}),
         ("scaffold", {"num_devices": 60}), ("norm_bounded", {"clip": 0.5})]


@pytest.mark.parametrize("name,args", CASES)
def test_three_workers_partial_sums_equal_one_worker_bit_for_bit(name, args):
    rng = np.random.default_rng(1)
    glob = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    updates = _updates(30, seed=2, control=name == "scaffold")
    rule = rule_for(name, args)
    single = _sum(rule, updates)
    share = np.random.default_rng(3).integers(0, 3, len(updates))  # how the broker happened to spread them
    partials = [_sum(rule, [u for u, w in zip(updates, share) if w == k], order_seed=k) for k in range(3)]
    combined = PartialSum(SIZE, rule.with_control)
    for part in reversed(partials):  # over the bus and back, in another order
        combined.add(PartialSum.from_bytes(part.to_bytes(), SIZE))
    assert np.array_equal(combined.delta, single.delta)
    assert (combined.examples, combined.steps, combined.count, combined.loss) == (
        single.examples, single.steps, single.count, single.loss)
    if rule.with_control:
        assert np.array_equal(combined.control, single.control)
    assert combined.norms == single.norms

    on_sum, on_partials, on_updates = (make_strategy(name, **args) for _ in range(3))
    w_single = on_sum.aggregate(glob, rule.combined(single, glob))
    w_split = on_partials.aggregate(glob, rule.combined(combined, glob))
    w_each = on_updates.aggregate(glob, updates)
    for a, b, c in zip(w_single, w_split, w_each):
        assert np.array_equal(a, b)
        np.testing.assert_allclose(a, c, atol=2e-6, rtol=0)
    for key, value in on_updates.state().items():  # SCAFFOLD's control variate, FedAvgM's velocity, Adam's moments
        for got, want in zip(on_sum.state()[key], value):
            np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)
    assert rule.combined(single, glob)[0].meta["train_loss"] == pytest.approx(
        np.mean([u.meta["train_loss"] for u in updates]), abs=1e-6)


@pytest.mark.parametrize("name,args", [(n, {}) for n in sorted(INDIVIDUAL)])
def test_strategies_that_need_every_update_are_refused_with_the_reason(name, args):
    with pytest.raises(ValueError, match="cannot run on partial sums: .*forward its individual updates"):
        rule_for(name, args)


def test_a_device_counted_twice_an_overflow_and_a_malformed_sum_are_refused():
    rule = rule_for("fedavg")
    updates = _updates(3, seed=4, control=False)
    total = _sum(rule, updates)
    with pytest.raises(ValueError, match="counted twice"):
        total.add(rule.contribution(updates[0], SIZE))
    with pytest.raises(SumOverflow):
        to_fixed(np.array([1e3], np.float32), weight=1000)
    for junk in (b"", b"PK\x03\x04nonsense", PartialSum(SIZE + 1).to_bytes()):
        with pytest.raises(ValueError):
            PartialSum.from_bytes(junk, SIZE)
    # subtracting an update takes exactly its contribution back out
    total.add(rule.contribution(updates[1], SIZE), sign=-1)
    assert np.array_equal(total.delta, _sum(rule, [updates[0], updates[2]]).delta)
    assert sorted(total.norms) == ["d0", "d2"]


def test_the_outlier_screen_needs_only_the_norms():
    assert outliers({"a": 1.0, "b": 1.2, "c": 100.0}, ratio=50) == ["c"]
    assert outliers({"a": 1.0, "c": 100.0}, ratio=50) == []  # fewer than 3: no median to trust
    assert outliers({"a": 1.0, "b": 1.2, "c": 100.0}, ratio=None) == []
