"""Three aggregator workers share the update stream through an MQTT 5 shared subscription on a real Mosquitto;
the coordinator adds their partial sums: the global model is bit for bit the single aggregator's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from broker.fed_messages import LocalUpdate, UpdateEncoding, decode_update, encode_update
from broker.launcher import broker_url
from broker.mqtt_link import parse_broker_url
from broker.topics import FleetTopics
from edge_runtime.fed_client import DeviceClient
from tests.federation_helpers import REGISTRY, FixedUpdater, expected_fedavg, initial_weights, wait_until
from tests.test_update_log import _feed, _open, _service
from tools.aggregator_bench import FLEET, classifier_weights, device_names, update_messages
from training.federated import checkpoint
from training.federated.aggregator import CHECKPOINT_FILE, Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.aggregator_workers import AggregatorWorker, coordinator
from training.federated.forwarded_updates import ForwardingWorkers
from training.federated.partial_sums import PartialSum
from training.federated.worker_coordinator import SharedWorkers

pytestmark = pytest.mark.integration

N, ROUNDS, WORKERS = 30, 2, 3


def _cfg(strategy: str = "fedavg") -> AggregatorConfig:
    return AggregatorConfig(FLEET, device_names(N), rounds=ROUNDS, strategy=strategy,
                            policy=RoundPolicy(deadline_s=60), honour_consent=False, encoding="int8")


def _messages(r: int) -> list[tuple[str, bytes]]:
    """Round r's updates; in round 2 one device's delta is 100 times longer: the outlier screen drops it."""
    messages = update_messages(device_names(N), r, seed=9)
    if r == 2:
        name, data = messages[7]
        header, u = decode_update(data)
        blown = LocalUpdate([d * 100 for d in u.delta], u.num_examples, u.local_steps, train_loss=u.train_loss)
        messages[7] = (name, encode_update(FLEET, r, header.device_id, blown, UpdateEncoding.parse("int8")))
    return messages


def _reference(tmp_path):
    agg = _service(tmp_path / "single", N)
    for r in range(1, ROUNDS + 1):
        _open(agg)
        _feed(agg, _messages(r))
        agg.journal.sync()
        agg._close_round()
    assert agg.rejected == {"outlier_norm": 1}
    return agg.weights


def single_run(cfg: AggregatorConfig, run_dir: Path) -> Aggregator:
    """One aggregator fed every round's messages (``_messages``) in device order, without a broker: the reference."""
    agg = Aggregator(cfg, classifier_weights(), "mqtt://127.0.0.1:1", run_dir)
    for r in range(1, ROUNDS + 1):
        _open(agg)
        _feed(agg, _messages(r))
        agg.journal.sync()
        agg._close_round()
    return agg


def publisher(url: str, client_id: str) -> mqtt.Client:
    host, port = parse_broker_url(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect(host, port)
    client.loop_start()
    return client


def run_with_workers(workers: list[AggregatorWorker], coord, device_urls: list[str]):
    """Run the workers and the coordinator; device k publishes its updates through ``device_urls[k % len]``
    once every worker has the round's plan. The coordinator's result."""
    # no clearing of an earlier run's retained final plan: a worker that has not joined this run ignores it
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for t in threads:
        t.start()
    wait_until(lambda: all(w.link.ready.is_set() for w in workers), what="workers connected and subscribed")
    box: dict = {}
    runner = threading.Thread(target=lambda: box.update(result=coord.run()), daemon=True)
    publishers = [publisher(url, f"test-devices-{i}") for i, url in enumerate(device_urls)]
    runner.start()
    try:
        for r in range(1, ROUNDS + 1):
            wait_until(lambda: coord.round == r and coord.selected and all(
                w.service.round == r and w.service.selected for w in workers), what=f"round {r} announced")
            for k, (name, data) in enumerate(_messages(r)):
                publishers[k % len(publishers)].publish(FleetTopics(FLEET).update(r, name), data,
                                                        qos=1).wait_for_publish(10)
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
    assert "result" in box, "coordinator did not finish"
    return box["result"]


def test_three_workers_on_a_shared_subscription_give_the_single_aggregate_bit_for_bit(mosquitto, tmp_path):
    url = broker_url(mosquitto)
    workers = [AggregatorWorker(_cfg(), classifier_weights(), url, tmp_path / f"w{i}", i) for i in range(WORKERS)]
    assert len({w.client_id for w in workers}) == WORKERS
    result = run_with_workers(workers, coordinator(_cfg(), classifier_weights(), url, tmp_path / "coord", WORKERS),
                              [url])
    assert [h["participants"] for h in result.history] == [N, N]  # delivered (as the single aggregator counts)
    assert result.rejected == {"outlier_norm": 1}
    per_worker = [sum(int(h["workers"][str(w)]) for h in result.history) for w in range(WORKERS)]
    assert sum(per_worker) == N * ROUNDS and max(per_worker) < N * ROUNDS  # shared, each update once
    assert sum(w.accepted_total for w in workers) == N * ROUNDS
    for got, want in zip(result.final_weights, _reference(tmp_path)):
        assert np.array_equal(got, want)


def test_workers_sum_or_forward_by_strategy_and_refuse_asynchronous_rounds(tmp_path):
    """Summable strategies get partial sums, the ones that need every update get forwarding (both sides),
    FedBuff's buffers cannot be split over workers."""
    for strategy, coordinating in (("fedavg", SharedWorkers), ("median", ForwardingWorkers),
                                   ("krum", ForwardingWorkers), ("trimmed_mean", ForwardingWorkers)):
        worker = AggregatorWorker(_cfg(strategy), classifier_weights(), "mqtt://127.0.0.1:1", tmp_path / strategy, 0)
        assert (worker.forwarding is None) == (coordinating is SharedWorkers)
        coord = coordinator(_cfg(strategy), classifier_weights(), "mqtt://127.0.0.1:1", tmp_path / f"c{strategy}", 2)
        assert type(coord.mode) is coordinating
    with pytest.raises(ValueError, match="asynchronous rounds"):
        AggregatorWorker(_cfg("fedbuff"), classifier_weights(), "mqtt://127.0.0.1:1", tmp_path / "fb", 0)
    with pytest.raises(ValueError, match="asynchronous rounds"):
        coordinator(_cfg("fedbuff"), classifier_weights(), "mqtt://127.0.0.1:1", tmp_path / "cfb", 2)


def test_pulsewire_aggregate_with_two_worker_processes_runs_a_federation(mosquitto, tmp_path):
    """The user-visible commands: `pulsewire aggregate --workers 2` and two `--worker-index I` processes, with
    three real device clients: both rounds complete with the in-process FedAvg of the three devices."""
    np.savez(tmp_path / "init.npz", *initial_weights())
    base = [sys.executable, "-m", "tools.cli", "aggregate", "--broker", broker_url(mosquitto), "--fleet", "workers",
            "--devices", ",".join(f"{n}:{i}" for n, i in REGISTRY.items()), "--init", str(tmp_path / "init.npz"),
            "--rounds", "2", "--quorum", "1", "--deadline", "120"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    workers = [subprocess.Popen(base + ["--run-dir", str(tmp_path / f"w{i}"), "--worker-index", str(i)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    devices = [DeviceClient(name, i, "workers", broker_url(mosquitto), FixedUpdater(k))
               for k, (name, i) in enumerate(REGISTRY.items())]
    try:
        for d in devices:
            d.start()
        coord = subprocess.run(base + ["--run-dir", str(tmp_path / "coord"), "--workers", "2"], env=env,
                               capture_output=True, text=True, timeout=180)
        outs = [w.communicate(timeout=60)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
        for d in devices:
            d.stop()
    assert coord.returncode == 0, coord.stdout + coord.stderr
    assert json.loads(coord.stdout.splitlines()[0])["participants"] == [3, 3]
    summed = [json.loads(out.strip().splitlines()[-1])["updates_summed"] for out in outs]
    assert sum(summed) == 6, outs
    _, arrays = checkpoint.load(tmp_path / "coord" / CHECKPOINT_FILE)
    for got, want in zip(arrays["weights"], expected_fedavg(2)):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_a_restarted_worker_answers_a_repeated_close_from_disk(tmp_path):
    """A worker that answered round 1 and then died gives the same partial sum when asked again (the
    coordinator may have lost the first answer): it is fsynced to disk before the worker moves on."""
    first = AggregatorWorker(_cfg(), classifier_weights(), "mqtt://127.0.0.1:1", tmp_path, 0)
    first.service.follow_round(1, list(device_names(N)), classifier_weights())
    _feed(first.service, update_messages(device_names(N), 1, seed=9)[:12])
    first._seal()
    sent = first._answer(1)[0]
    assert first.service.round == 2 and PartialSum.from_bytes(sent, 4757).count == 12
    again = AggregatorWorker(_cfg(), classifier_weights(), "mqtt://127.0.0.1:1", tmp_path, 0)
    assert again.service.restore() and again.service.round == 2
    assert again._answer(1)[0] == sent
    assert PartialSum.from_bytes(again._answer(7)[0], 4757).count == 0  # a round it never saw: nothing
