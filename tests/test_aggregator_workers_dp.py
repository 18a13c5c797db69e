"""DP-FedAvg with aggregator workers on a real Mosquitto: each worker clips every update to the round's C before
it sums, the coordinator adds the noise once and charges the round; with the same updates and noise seed the
global model and the privacy ledger are the single aggregator's, bit for bit, also with adaptive clipping (the
clip moves between rounds, so the workers must get each round's C) and an outlier taken out of the sum."""
from __future__ import annotations

import numpy as np
import pytest

from broker.launcher import broker_url
from tests.test_partial_sums_mqtt import ROUNDS, WORKERS, N, run_with_workers, single_run
from tools.aggregator_bench import FLEET, classifier_weights, device_names
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.aggregator_workers import AggregatorWorker, coordinator
from training.federated.partial_sums import PartialSum, rule_for
from training.federated.registry import make_strategy
from training.federated.robust import clip_delta
from training.federated.strategies import ClientUpdate

pytestmark = pytest.mark.integration

DP = {"clip": 0.5, "noise_multiplier": 0.8, "adaptive_quantile": 0.5, "count_noise": 2.0, "seed": 11}


def _cfg() -> AggregatorConfig:
    return AggregatorConfig(FLEET, device_names(N), rounds=ROUNDS, strategy="dp_fedavg", strategy_args=DP,
                            policy=RoundPolicy(deadline_s=60), honour_consent=False, encoding="int8",
                            dp_noise="seeded")  # the single aggregator and the coordinator draw the same noise


def test_dp_fedavg_workers_give_the_single_aggregators_model_and_ledger(mosquitto, tmp_path):
    single = single_run(_cfg(), tmp_path / "single")
    assert single.rejected == {"outlier_norm": 1}
    clips = [row["privacy"]["clip"] for row in single.history]
    assert clips[0] == DP["clip"] and clips[1] != clips[0]  # adaptive clipping moved C after round 1

    url = broker_url(mosquitto)
    workers = [AggregatorWorker(_cfg(), classifier_weights(), url, tmp_path / f"w{i}", i) for i in range(WORKERS)]
    result = run_with_workers(workers, coordinator(_cfg(), classifier_weights(), url, tmp_path / "coord", WORKERS),
                              [url])
    assert result.rejected == {"outlier_norm": 1}
    assert [h["participants"] for h in result.history] == [N, N]
    per_worker = [sum(int(h["workers"][str(w)]) for h in result.history) for w in range(WORKERS)]
    assert sum(per_worker) == N * ROUNDS and max(per_worker) < N * ROUNDS  # the stream was shared
    for got, want in zip(result.final_weights, single.weights):
        assert np.array_equal(got, want)
    assert [h["privacy"] for h in result.history] == [h["privacy"] for h in single.history]
    assert result.history[0]["privacy"]["participants"] == N  # the clipped sum counts its updates
    for w in workers:  # each worker clipped round 2 with round 2's C, sent by the coordinator
        assert w._round_args.get(2, dict) == {"clip": clips[1]}


def test_the_dp_sum_rule_clips_each_update_before_summing_and_the_strategy_noises_the_total():
    """On hand-made updates: the clipped sum equals the strategy's own clipping of the individual updates, and
    with no noise the released model is the same up to the fixed-point rounding."""
    rng = np.random.default_rng(0)
    like = [np.zeros((4, 3), np.float32), np.zeros(5, np.float32)]
    updates = [ClientUpdate(f"d{i}", [rng.normal(0, s, w.shape).astype(np.float32) for w in like], 10)
               for i, s in enumerate([0.01, 0.1, 1.0, 3.0])]
    rule = rule_for("dp_fedavg", {"clip": 0.5})
    total = PartialSum(17)
    for u in updates:
        total.add(rule.contribution(u, 17))
    (summed,) = rule.combined(total, like)
    want = [sum(clip_delta(u.delta, 0.5)[i].astype(np.float64) for u in updates) for i in range(2)]
    for got, w in zip(summed.delta, want):
        np.testing.assert_allclose(got, w, atol=4 * 2 ** -24, rtol=0)
    assert summed.meta["within_clip"] == 2 and summed.meta["clipped_sum_of"] == 4
    args = {"num_devices": 4, "clip": 0.5, "noise_multiplier": 0.0, "adaptive_quantile": 0.5,
            "noise": "seeded"}  # the clip count's noise: the same draws on both
    on_sum, on_each = make_strategy("dp_fedavg", **args), make_strategy("dp_fedavg", **args)
    for a, b in zip(on_sum.aggregate(like, [summed]), on_each.aggregate(like, updates)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    assert on_sum.clip == on_each.clip and on_sum.ledger == on_each.ledger
