"""Strategies that need every update (median, trimmed mean, Multi-Krum, norm bounding to the median norm) with
aggregator workers on a real Mosquitto: the workers decode, verify and screen, and forward each accepted
update as int8 + scale; the coordinator runs the robust rule. The model is the single aggregator's bit for bit
(the same updates, an outlier in round 2), also when a forward batch is lost and fetched again from the
worker's log."""
from __future__ import annotations

import numpy as np
import pytest

from broker.fed_messages import UpdateEncoding, roundtrip_delta
from broker.launcher import broker_url
from tests.test_partial_sums_mqtt import ROUNDS, WORKERS, N, run_with_workers, single_run
from tools.aggregator_bench import FLEET, classifier_weights, device_names
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.aggregator_workers import AggregatorWorker, coordinator
from training.federated.forwarded_updates import ForwardingWorkers, as_int8, decode_forwards, encode_forwards
from training.federated.strategies import ClientUpdate

ROBUST = [("median", {}), ("trimmed_mean", {"trim": 0.1}), ("krum", {"byzantine": 3, "multi": 5}),
          ("norm_bounded", {})]


def _cfg(strategy: str, args: dict, deadline_s: float = 60) -> AggregatorConfig:
    """A short deadline comes with a low quorum: the round closes at its first deadline."""
    policy = RoundPolicy(deadline_s=deadline_s, quorum=0.8 if deadline_s >= 60 else 0.3)
    return AggregatorConfig(FLEET, device_names(N), rounds=ROUNDS, strategy=strategy, strategy_args=args,
                            policy=policy, honour_consent=False, encoding="int8")


class LosesFirstBatch(ForwardingWorkers):
    """A coordinator that never received worker 0's first forward batch of the last round (as after a restart)."""

    lost = 0

    def note(self, service, kind, worker, payload):
        if kind == "forward" and worker == 0 and service.round == ROUNDS and not self.lost:
            self.lost = len(decode_forwards(payload, service.weights))
            return
        super().note(service, kind, worker, payload)


def _with_workers(url, tmp_path, strategy, args, mode=None, deadline_s: float = 60):
    workers = [AggregatorWorker(_cfg(strategy, args, deadline_s), classifier_weights(), url, tmp_path / f"w{i}", i)
               for i in range(WORKERS)]
    coord = coordinator(_cfg(strategy, args, deadline_s), classifier_weights(), url, tmp_path / "coord", WORKERS)
    if mode is not None:
        coord.mode = mode
    return workers, run_with_workers(workers, coord, [url])


@pytest.mark.integration
@pytest.mark.parametrize("strategy,args", ROBUST)
def test_forwarding_workers_give_the_single_aggregators_robust_model(mosquitto, tmp_path, strategy, args):
    single = single_run(_cfg(strategy, args), tmp_path / "single")
    workers, result = _with_workers(broker_url(mosquitto), tmp_path, strategy, args)
    assert result.rejected == single.rejected == {"outlier_norm": 1}
    assert [h["participants"] for h in result.history] == [N, N]
    per_worker = [sum(int(h["workers"][str(w)]) for h in result.history) for w in range(WORKERS)]
    assert sum(per_worker) == N * ROUNDS and max(per_worker) < N * ROUNDS  # shared, each update forwarded once
    assert sum(w.accepted_total for w in workers) == N * ROUNDS
    assert not np.array_equal(result.final_weights[0], classifier_weights()[0])
    for got, want in zip(result.final_weights, single.weights):
        assert np.array_equal(got, want)


@pytest.mark.integration
def test_a_lost_forward_batch_is_fetched_from_the_workers_log(mosquitto, tmp_path):
    """The coordinator misses updates it never received, so the round runs to its deadline; the close then has
    every worker's list of accepted devices and fetches the missing updates from the worker's log."""
    single = single_run(_cfg("median", {}), tmp_path / "single")
    mode = LosesFirstBatch(WORKERS)
    _, result = _with_workers(broker_url(mosquitto), tmp_path, "median", {}, mode, deadline_s=20)
    assert mode.lost > 0 and result.history[-1]["closed_by"] == "deadline"
    assert [h["participants"] for h in result.history] == [N, N]
    for got, want in zip(result.final_weights, single.weights):
        assert np.array_equal(got, want)


def test_int8_updates_travel_as_int8_and_scale_and_come_back_bit_for_bit():
    rng = np.random.default_rng(5)
    like = classifier_weights()
    for spec in ("int8", "topk:0.1"):
        delta = roundtrip_delta([rng.normal(0, 0.02, w.shape).astype(np.float32) for w in like],
                                UpdateEncoding.parse(spec))
        assert all(as_int8(d) is not None for d in delta)
        update = ClientUpdate("dev000003", delta, 37, 5, None, {"train_loss": 0.25})
        data = encode_forwards([(2, update)])
        assert len(data) < sum(w.size for w in like) + 400  # one byte a parameter, not four
        ((round_, back),) = decode_forwards(data, like)
        assert round_ == 2 and (back.device, back.num_examples, back.local_steps, back.meta) == (
            "dev000003", 37, 5, {"train_loss": 0.25})
        for a, b in zip(back.delta, delta):
            assert a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))
    plain = [rng.normal(0, 0.02, w.shape).astype(np.float32) for w in like]  # a float32 fleet: sent as float32
    assert as_int8(plain[0]) is None
    ((_, back),) = decode_forwards(encode_forwards([(1, ClientUpdate("d", plain, 1, 1))]), like)
    assert back.meta == {"train_loss": None}
    for a, b in zip(back.delta, plain):
        assert np.array_equal(a, b)


def test_a_malformed_forward_batch_is_refused():
    like = classifier_weights()
    good = encode_forwards([(1, ClientUpdate("d", [np.zeros_like(w) for w in like], 1, 1))])
    for junk in (b"", good[:-1], good + b"x", good.replace(b"\x01\x00\x00\x00", b"\x07\x00\x00\x00", 1)):
        with pytest.raises(ValueError):
            decode_forwards(junk, like)
    with pytest.raises(ValueError, match="tensors for a model"):
        decode_forwards(good, like[:-1])
