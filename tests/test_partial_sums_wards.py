"""Per-ward partial aggregation over Mosquitto bridges: two ward brokers bridged to a central one (started
here); each ward's aggregator sums its devices' updates and only its partial sum goes up; the coordinator on
the central broker gets the single aggregator's model bit for bit, and no individual update reaches the centre."""
from __future__ import annotations

import threading

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from broker.bridge import BridgeSpec, WardHierarchy
from broker.launcher import BrokerUnavailable
from broker.mqtt_link import MqttLink, parse_broker_url
from broker.topics import FleetTopics
from tests.federation_helpers import wait_until
from tests.test_partial_sums_mqtt import ROUNDS, N, _cfg, _messages, _reference
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


def _publisher(url: str, client_id: str) -> mqtt.Client:
    host, port = parse_broker_url(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect(host, port)
    client.loop_start()
    return client


def test_each_ward_sends_one_partial_sum_up_and_the_centre_gets_the_single_aggregate(wards, tmp_path):
    seen_at_centre: list[str] = []
    spy = MqttLink(wards.central_url, "test-central-spy", [f"pw/{FLEET}/update/#"],
                   lambda m: seen_at_centre.append(m.topic), clean_session=True)
    spy.start()
    workers = [AggregatorWorker(_cfg(), classifier_weights(), url, tmp_path / f"ward{i}", i)
               for i, url in enumerate(wards.ward_urls)]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for t in threads:
        t.start()
    coord = coordinator(_cfg(), classifier_weights(), wards.central_url, tmp_path / "centre", len(workers))
    box: dict = {}
    runner = threading.Thread(target=lambda: box.update(result=coord.run()), daemon=True)
    publishers = [_publisher(url, f"test-ward{i}-devices") for i, url in enumerate(wards.ward_urls)]
    runner.start()
    try:
        for r in range(1, ROUNDS + 1):
            wait_until(lambda: coord.round == r and coord.selected and all(
                w.service.round == r and w.service.selected for w in workers), what=f"round {r} in both wards")
            for k, (name, data) in enumerate(_messages(r)):
                publishers[k % 2].publish(FleetTopics(FLEET).update(r, name), data, qos=1).wait_for_publish(10)
        runner.join(120)
    finally:
        for p in publishers:
            p.loop_stop()
            p.disconnect()
        for w in workers:
            w.stop_event.set()
        for t in threads:
            t.join(10)
        coord.mode.stop()
        spy.stop()
    assert "result" in box, "coordinator did not finish"
    result = box["result"]
    assert [h["workers"] for h in result.history] == [{"0": N // 2, "1": N // 2}] * ROUNDS  # before the drop
    assert result.rejected == {"outlier_norm": 1}
    assert seen_at_centre == []  # the updates stayed in their wards
    for got, want in zip(result.final_weights, _reference(tmp_path)):
        assert np.array_equal(got, want)
