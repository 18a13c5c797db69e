"""A three-node RabbitMQ cluster on loopback (broker/rabbitmq_cluster.py) carrying pulsewire traffic:
updates, alerts, global models and releases cross nodes, a federated round with devices on two nodes
completes while the aggregator's node is killed (its link fails over), and a killed node loses no
acknowledged update.
One cluster for the module (each node boots in ~10 s); the node-kill test runs last."""
from __future__ import annotations

import datetime as dt
import random
import shutil
import threading

import numpy as np
import pytest

from broker.device_messages import decode_alert
from broker.fed_messages import fleet_id
from broker.mqtt_link import MqttLink
from broker.rabbitmq_cluster import RabbitMQCluster, publish_retained_on_every_node
from broker.topics import FleetTopics
from broker.wire import Encoding, Kind, decode_tensors, encode_tensors
from edge_runtime.fed_client import DeviceClient
from tests.federation_helpers import REGISTRY, FixedUpdater, expected_fedavg, initial_weights, wait_until
from tests.mqtt_inbox import Inbox
from training.federated.aggregator import Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from tools.fleet_sim.device import SimDevice

pytestmark = pytest.mark.integration
FLEET = "rmq"
T = FleetTopics(FLEET)
MODEL = encode_tensors(Kind.MODEL, fleet_id(FLEET), 1, 0, [np.linspace(-1, 1, 4757, dtype=np.float32)],
                       Encoding.FLOAT32, meta={"round": 1})  # a whole model, ~19 KB


def _publish(url: str, client_id: str, items: list[tuple[str, bytes]]) -> None:
    """Publish QoS 1 and return once the broker acknowledged every message (an accepted message)."""
    link = MqttLink(url, client_id, [], lambda _m: None)
    link.start()
    try:
        infos = [link.publish(topic, payload, qos=1) for topic, payload in items]
        for info in infos:
            info.wait_for_publish(15)
            assert info.is_published()
    finally:
        link.stop()


def _updates(devices: range, round_: int) -> list[tuple[str, bytes]]:
    out = []
    for i in devices:
        dev = SimDevice.create(i, seed=0, slow_fraction=0.0)
        out.append((T.update(round_, dev.name), dev.update_payload(FLEET, round_, ((32, 5), (5,)), 0)))
    return out


@pytest.fixture(scope="module")
def cluster():
    if not shutil.which("rabbitmq-server") and not shutil.which("/usr/sbin/rabbitmq-server"):
        pytest.skip("rabbitmq-server is not installed (apt-get install rabbitmq-server; make setup does it)")
    c = RabbitMQCluster(3)
    try:
        c.start()
        yield c
    finally:
        c.close()


def test_updates_and_alerts_published_on_two_nodes_reach_a_subscriber_on_the_third(cluster):
    u0, u1, u2 = cluster.urls
    agg = Inbox(u1, "pw-rmq-agg-a", [T.all_updates(), T.all_alerts()])
    try:
        _publish(u0, "pw-rmq-dev-a", _updates(range(0, 10), 1))
        dev = SimDevice.create(42, seed=0, slow_fraction=0.0)
        r = random.Random(0)
        alerts = [dev.next_alert(r, dt.datetime.now(dt.timezone.utc)) for _ in range(5)]
        _publish(u2, "pw-rmq-dev-b", _updates(range(10, 20), 1) +
                 [(T.alert(dev.name), dev.alert_payload(FLEET, a)) for a in alerts])
        got = agg.wait_for(25)
    finally:
        agg.close()
    updates = [decode_tensors(m.payload) for m in got if "/update/" in m.topic]
    assert sorted(u.header.device_id for u in updates) == list(range(1, 21))
    assert [decode_alert(m.payload)[1]["alert_id"] for m in got if "/alert/" in m.topic] == \
        [a["alert_id"] for a in alerts]  # one publisher's alerts stay in order across nodes


def test_retained_models_are_node_local_and_exact_topic_until_published_on_every_node(cluster):
    u0, u1, u2 = cluster.urls
    live = Inbox(u1, "pw-rmq-live", [T.all_globals()])
    try:
        link = MqttLink(u0, "pw-rmq-agg-b", [], lambda _m: None)
        link.start()
        link.publish(T.global_model(1), MODEL, qos=1, retain=True).wait_for_publish(15)
        link.stop()
        assert live.wait_for(1)[0].payload == MODEL  # a live subscriber on another node gets it
    finally:
        live.close()

    def late(url: str, name: str, topic: str) -> list:
        inbox = Inbox(url, name, [topic])
        try:
            return inbox.wait_for(1, timeout_s=3)
        finally:
            inbox.close()

    # RabbitMQ 3.10: the retained copy lives on the node it was published through, exact topics only
    assert [m.payload for m in late(u0, "pw-rmq-late0", T.global_model(1))] == [MODEL]
    assert late(u1, "pw-rmq-late1", T.global_model(1)) == []
    assert late(u0, "pw-rmq-late0w", T.all_globals()) == []
    assert publish_retained_on_every_node(cluster.urls, T.release(), b"signed-release", "pw-rmq-agg-c") == 3
    for i, url in enumerate(cluster.urls):
        assert [m.payload for m in late(url, f"pw-rmq-late-rel{i}", T.release())] == [b"signed-release"]


def test_a_device_that_missed_the_model_gets_it_again_when_the_round_falls_below_quorum(cluster, tmp_path):
    """dev-c subscribes on node 0 after the aggregator announced round 1 through node 1: the retained copy
    there is node-local and never reaches a wildcard, so it has nothing to train on. At the deadline, below
    the quorum, the aggregator announces the round again and the round closes with all three devices."""
    u0, u1, u2 = cluster.urls
    fleet = "rmqagain"
    updaters = {name: FixedUpdater(k) for k, name in enumerate(REGISTRY)}
    homes = {"dev-a": u0, "dev-b": u2, "dev-c": u0}
    devices = {name: DeviceClient(name, dev_id, fleet, homes[name], updaters[name])
               for name, dev_id in REGISTRY.items()}
    agg = Aggregator(AggregatorConfig(fleet, dict(REGISTRY), rounds=1, policy=RoundPolicy(deadline_s=8),
                                      honour_consent=False), initial_weights(), u1, tmp_path)
    box: dict = {}
    runner = threading.Thread(target=lambda: box.update(result=agg.run()), daemon=True)
    try:
        for name in ("dev-a", "dev-b"):
            devices[name].start()
        wait_until(lambda: all(devices[n].link.ready.is_set() for n in ("dev-a", "dev-b")), what="two devices ready")
        runner.start()
        # once the two devices train on it, the broker has routed the live copy: dev-c cannot get it any more
        wait_until(lambda: updaters["dev-a"].calls and updaters["dev-b"].calls, what="round 1 reached two devices")
        devices["dev-c"].start()  # no retained copy on node 0 for a wildcard
        runner.join(60)
    finally:
        for d in devices.values():
            d.stop()
    assert "result" in box, "the aggregator did not finish"
    (row,) = box["result"].history
    assert row["participants"] == 3
    assert row["bytes_down"] == 2 * 3 * row["model_bytes"]  # announced twice to the three selected
    assert updaters["dev-c"].calls == 1 and updaters["dev-a"].calls == 1  # the second copy trained nobody twice
    for got, want in zip(box["result"].final_weights, expected_fedavg(1)):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_a_round_with_devices_on_two_nodes_survives_the_aggregators_node_being_killed(cluster, tmp_path):
    """The aggregator's link lists the nodes (its own first) and fails over to the next when its node dies:
    it resumes its durable session there, every update acknowledged before the kill is in its log, the one
    published after it arrives, and the rounds end with the in-process FedAvg of all three devices."""
    u0, u1, u2 = cluster.urls
    fleet = "rmqround"
    gate = threading.Event()
    updaters = {name: FixedUpdater(k, gate if name == "dev-c" else None) for k, name in enumerate(REGISTRY)}
    homes = {"dev-a": u0, "dev-b": u2, "dev-c": u0}  # devices on two nodes, none on the aggregator's
    devices = [DeviceClient(name, dev_id, fleet, homes[name], updaters[name]) for name, dev_id in REGISTRY.items()]
    for d in devices:
        d.start()
    agg = Aggregator(AggregatorConfig(fleet, dict(REGISTRY), rounds=2, policy=RoundPolicy(deadline_s=120),
                                      honour_consent=False), initial_weights(), ",".join([u1, u0, u2]), tmp_path)
    box: dict = {}
    runner = threading.Thread(target=lambda: box.update(result=agg.run()), daemon=True)
    try:
        wait_until(lambda: all(d.link.ready.is_set() for d in devices), what="devices connected and subscribed")
        runner.start()
        wait_until(lambda: agg.journal.log is not None and agg.journal.log.records_synced >= 2 and not agg.journal.held,
                   timeout_s=120, what="two updates accepted and acknowledged through node 1")
        cluster.nodes[1].kill()
        # dev-c publishes once the aggregator has resumed its session on another node: a publish inside the
        # failover window was lost in 2 of 5 runs on a loaded machine (docs/scale.md, known limits)
        wait_until(lambda: agg.link.connects >= 2 and agg.link.ready.is_set(), timeout_s=60,
                   what="the aggregator failed over to another node")
        gate.set()
        runner.join(150)
    finally:
        gate.set()
        for d in devices:
            d.stop()
    assert "result" in box, "the aggregator did not finish after its node was killed"
    assert agg.link.connects >= 2 and agg.link.port != cluster.nodes[1].mqtt_port
    assert [h["participants"] for h in box["result"].history] == [3, 3]
    for got, want in zip(box["result"].final_weights, expected_fedavg(2)):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    cluster.nodes[1].start()  # back for the next test, which kills it again
    cluster.nodes[1].wait_ready()


def test_a_killed_node_loses_no_acknowledged_update(cluster):
    u0, u1, u2 = cluster.urls
    publish_retained_on_every_node(cluster.urls, T.global_model(2), MODEL, "pw-rmq-agg-d")
    # the aggregator's durable session (a quorum queue) is created through node 1, then it goes away
    Inbox(u1, "pw-rmq-aggregator", [T.all_updates()]).close()
    _publish(u0, "pw-rmq-dev-c", _updates(range(0, 5), 2))   # queued while the aggregator is away
    cluster.nodes[1].kill()                                     # its node crashes
    assert len(cluster.running_nodes(via=0)) == 2
    _publish(u2, "pw-rmq-dev-d", _updates(range(5, 10), 2))  # devices keep publishing on the survivors
    agg = Inbox(u2, "pw-rmq-aggregator", [T.all_updates()])  # the same session, resumed on another node
    try:
        got = agg.wait_for(10)
    finally:
        agg.close()
    assert sorted(decode_tensors(m.payload).header.device_id for m in got) == list(range(1, 11))
    # retained copies published on every node survive on the nodes still running
    for i, url in ((0, u0), (2, u2)):
        inbox = Inbox(url, f"pw-rmq-after-kill{i}", [T.global_model(2)])
        try:
            assert [m.payload for m in inbox.wait_for(1)] == [MODEL]
        finally:
            inbox.close()
