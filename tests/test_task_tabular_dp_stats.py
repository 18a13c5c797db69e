"""The DP run's standardisation statistics: released with noise, inside the same ε = 1 as DP-SGD.

The ε is recomputed here with dp-accounting directly (not through the project's accountant), so a bench whose σ
ignored the statistics' release, or a release left out of the composition, fails."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tools.task_bench.tabular import (
    DELTA,
    DP_FEATURES,
    DP_LOCAL,
    DP_PIPELINE,
    DP_ROUNDS,
    DP_TRANSFORM,
    EPSILON,
    STATS_NOISE,
)
from training.federated.dpsgd import calibrate_noise, ledger
from training.federated.local_training import LocalConfig
from training.tasks.tabular import TabularTask
from training.tasks.tabular_dp_stats import (
    STATS_OPTIONS,
    UPPER_BOUNDS,
    DpStats,
    private_mean_std,
    public_mean_std,
    public_range,
)
from training.tasks.tabular_features import columns_of, feature_map


def _pld_epsilon(sigma: float, rate: float, steps: int, release: float | None) -> float:
    import dp_accounting
    from dp_accounting import pld

    events = [dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(sigma)), steps)]
    if release is not None:
        events.append(dp_accounting.GaussianDpEvent(release))
    acc = pld.PLDAccountant(value_discretization_interval=1e-4)
    acc.compose(dp_accounting.ComposedDpEvent(events))
    return acc.get_epsilon(DELTA)


def test_the_composed_release_of_statistics_and_dpsgd_stays_within_epsilon():
    local = LocalConfig(**DP_LOCAL)
    steps = DP_ROUNDS * local.epochs * local.dpsgd_steps_per_epoch
    sigma = calibrate_noise(EPSILON, DELTA, local.dpsgd_rate, steps, release_noise=STATS_NOISE)
    assert _pld_epsilon(sigma, local.dpsgd_rate, steps, STATS_NOISE) <= EPSILON + 1e-3
    # the release is not free: DP-SGD's σ alone, calibrated without it, would overspend once it is added
    alone = calibrate_noise(EPSILON, DELTA, local.dpsgd_rate, steps)
    assert sigma > alone and _pld_epsilon(alone, local.dpsgd_rate, steps, STATS_NOISE) > EPSILON
    rows = ledger({"H1": DP_ROUNDS}, {"H1": 100}, LocalConfig(**DP_LOCAL, dpsgd_noise=sigma), DELTA,
                  release_noise=STATS_NOISE)
    assert rows[0].release_noise == STATS_NOISE and rows[0].epsilon_pld <= EPSILON + 1e-3
    assert rows[0].epsilon_pld > ledger({"H1": DP_ROUNDS}, {"H1": 100}, LocalConfig(**DP_LOCAL, dpsgd_noise=sigma),
                                        DELTA)[0].epsilon_pld


def test_private_statistics_are_noisy_within_the_public_range_and_reach_the_contract():
    exact = TabularTask(transform=DP_TRANSFORM, features=DP_FEATURES)
    private = [TabularTask(transform=DP_TRANSFORM, features=DP_FEATURES, dp_stats=DP_PIPELINE.stats(seed))
               for seed in (0, 0, 1)]
    cols = columns_of(DP_FEATURES)
    low, width = public_range(feature_map(DP_TRANSFORM, cols), UPPER_BOUNDS[cols])
    means = [t._data["mean"] for t in private]
    np.testing.assert_array_equal(means[0], means[1])  # the noise is the seed's
    assert not np.allclose(means[0], means[2]) and not np.allclose(means[0], exact._data["mean"], rtol=1e-3)
    assert np.all(means[0] >= low - 1e-6) and np.all(means[0] <= low + width + 1e-6)
    assert np.all(private[0]._data["std"] > 0)
    train = private[0].load("train")
    contract = private[0].edge_contract(train).preprocessing
    assert contract["transform"] == DP_TRANSFORM and contract["mean"] == pytest.approx(list(means[0]))
    # the test split is standardised with the released statistics, not with its own
    test = private[0].load("test").inputs["features"]
    logged = exact._data["x"][exact._data["rows"]["test"]] * exact._data["std"] + exact._data["mean"]
    np.testing.assert_allclose(test, (logged - means[0]) / private[0]._data["std"], rtol=1e-3, atol=1e-3)


def test_the_public_bounds_cover_every_feature_and_bad_settings_are_refused():
    assert len(UPPER_BOUNDS) == 30 and np.all(UPPER_BOUNDS > 0)
    with pytest.raises(ValueError, match="noise multiplier"):
        DpStats(0.0)
    public = TabularTask(transform="log1p", dp_stats=DpStats(math.inf))
    low, width = public_range(np.log1p)
    np.testing.assert_allclose(public._data["mean"], low + width / 2)


def test_the_public_bounds_option_reads_no_record_and_leaves_the_whole_epsilon_to_dpsgd():
    rng = np.random.default_rng(3)
    hospitals = np.repeat(np.arange(4), 25)
    data = [rng.uniform(0.0, 1.0, (100, 30)) * UPPER_BOUNDS * s for s in (0.1, 0.5)]
    public = [private_mean_std(x, hospitals, np.log1p, DpStats.named("public-bounds")) for x in data]
    released = [private_mean_std(x, hospitals, np.log1p, DpStats.named("dp-release")) for x in data]
    for k in (0, 1):  # two different datasets: the same public statistics, different released ones
        np.testing.assert_array_equal(public[0][k], public[1][k])
        np.testing.assert_array_equal(public[0][k], public_mean_std(np.log1p)[k])
        assert not np.allclose(released[0][k], released[1][k])
    task = TabularTask(transform="log1p", dp_stats=DpStats.named("public-bounds"))
    contract = task.edge_contract(task.load("train")).preprocessing
    assert contract["mean"] == pytest.approx(list(public[0][0])) and contract["std"] == pytest.approx(list(public[0][1]))
    # nothing released: σ is DP-SGD's alone and the ledger charges only the steps
    local = LocalConfig(**DP_LOCAL)
    steps = DP_ROUNDS * local.epochs * local.dpsgd_steps_per_epoch
    sigma = calibrate_noise(EPSILON, DELTA, local.dpsgd_rate, steps, release_noise=STATS_OPTIONS["public-bounds"].noise_multiplier)
    assert sigma == calibrate_noise(EPSILON, DELTA, local.dpsgd_rate, steps)
    noised = LocalConfig(**DP_LOCAL, dpsgd_noise=sigma)
    row = ledger({"H1": DP_ROUNDS}, {"H1": 100}, noised, DELTA, release_noise=STATS_OPTIONS["public-bounds"].noise_multiplier)[0]
    assert row.epsilon_pld == pytest.approx(_pld_epsilon(sigma, local.dpsgd_rate, steps, None), abs=1e-3)
    assert row.epsilon_pld <= EPSILON + 1e-3
    assert ledger({"H1": DP_ROUNDS}, {"H1": 100}, noised, DELTA,
                  release_noise=STATS_OPTIONS["dp-release"].noise_multiplier)[0].epsilon_pld > EPSILON
    with pytest.raises(ValueError, match="unknown"):
        DpStats.named("exact")
