"""Per-ward partial aggregation over Mosquitto bridges: two ward brokers bridged to a central one (started
here); each ward's aggregator sums its devices' updates and only its partial sum goes up; the coordinator on
the central broker gets the single aggregator's model bit for bit, and no individual update reaches the centre."""
from __future__ import annotations

import numpy as np
import pytest

from broker.bridge import BridgeSpec, WardHierarchy
from broker.launcher import BrokerUnavailable
from broker.mqtt_link import MqttLink
from tests.test_partial_sums_mqtt import ROUNDS, N, _cfg, _reference, run_with_workers
from tools.aggregator_bench import FLEET, classifier_weights
from training.federated.aggregator_workers import AggregatorWorker, coordinator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wards():
    try:
        hierarchy = WardHierarchy(2, (FLEET,), ward_aggregation=True)
        hierarchy.start()
    except BrokerUnavailable as exc:
        pytest.fail(f"{exc}; the ward tests need Mosquitto (make setup installs it)")
    yield hierarchy
    hierarchy.close()


def test_a_ward_bridge_with_ward_aggregation_keeps_updates_in_the_ward():
    lines = BridgeSpec("ward3", "10.0.0.1", 1883, ("f",), ward_aggregation=True).config_lines()
    assert "topic pw/f/agg/partial/+/+ out 1" in lines and "topic pw/f/agg/close/+ in 1" in lines
    assert not any(line.startswith("topic pw/f/update/") for line in lines)
    assert "topic pw/f/update/+/+ out 1" in BridgeSpec("ward3", "10.0.0.1", 1883, ("f",)).config_lines()


def test_each_ward_sends_one_partial_sum_up_and_the_centre_gets_the_single_aggregate(wards, tmp_path):
    seen_at_centre: list[str] = []
    spy = MqttLink(wards.central_url, "test-central-spy", [f"pw/{FLEET}/update/#"],
                   lambda m: seen_at_centre.append(m.topic), clean_session=True)
    spy.start()
    workers = [AggregatorWorker(_cfg(), classifier_weights(), url, tmp_path / f"ward{i}", i)
               for i, url in enumerate(wards.ward_urls)]
    try:
        result = run_with_workers(workers, coordinator(_cfg(), classifier_weights(), wards.central_url,
                                                       tmp_path / "centre", len(workers)), wards.ward_urls)
    finally:
        spy.stop()
    assert [h["workers"] for h in result.history] == [{"0": N // 2, "1": N // 2}] * ROUNDS  # before the drop
    assert result.rejected == {"outlier_norm": 1}
    assert seen_at_centre == []  # the updates stayed in their wards
    for got, want in zip(result.final_weights, _reference(tmp_path)):
        assert np.array_equal(got, want)
