"""The aggregator's O(1) path: the update log (batched fsync, torn tail, acks held until durable), the running
sum, a checkpoint whose size does not depend on the number of updates, and recovery = checkpoint + log replay
after a real SIGKILL. No broker needed: messages go through the service's own receive path (``take``)."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from broker.fed_messages import decode_update
from broker.mqtt_link import Message
from broker.topics import FleetTopics
from tools.aggregator_bench import FLEET, classifier_weights, device_names, update_messages
from training.federated.aggregator import CHECKPOINT_FILE, LOG_DIR, Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.strategies import ClientUpdate, FedAvg
from training.federated.update_log import LogPolicy, UpdateLog, scan

ROOT = Path(__file__).resolve().parent.parent
TOPICS = FleetTopics(FLEET)


def _service(run_dir: Path, n: int, policy: LogPolicy | None = None, strategy: str = "fedavg") -> Aggregator:
    cfg = AggregatorConfig(FLEET, device_names(n), rounds=3, strategy=strategy, policy=RoundPolicy(deadline_s=60),
                           honour_consent=False, encoding="int8")
    return Aggregator(cfg, classifier_weights(), "mqtt://127.0.0.1:1", run_dir, log_policy=policy)


def _open(agg: Aggregator) -> None:
    """What ``run`` does when a round starts (without publishing it)."""
    assert agg.open_round()


def _feed(agg: Aggregator, messages: list[tuple[str, bytes]], first_mid: int = 1) -> None:
    for mid, (name, data) in enumerate(messages, first_mid):
        agg.take(Message(TOPICS.update(agg.round, name), data, mid, 1))


def test_the_log_fsyncs_in_batches_and_cuts_a_torn_tail(tmp_path, caplog):
    path = tmp_path / "round1.log"
    log = UpdateLog(path, LogPolicy(fsync_every=4, fsync_interval_s=10.0))
    for i in range(3):
        log.append(f"d{i}", 1, bytes([i]) * 100)
    assert not log.due() and log.pending == 3
    log.append("d3", 1, b"x" * 100)
    assert log.due() and log.sync() == 4 and log.pending == 0 and log.fsyncs == 1
    offset = log.append("dé", 2, b"late")
    log.close()
    with open(path, "ab") as f:
        f.write(b"\x50\x00\x00\x00garbage")  # a record cut short by a crash
    with caplog.at_level(logging.WARNING):
        again = UpdateLog(path)
    assert "torn tail" in caplog.text
    records = again.records()
    assert [(r.device, r.round) for r in records] == [("d0", 1), ("d1", 1), ("d2", 1), ("d3", 1), ("dé", 2)]
    assert records[2].payload == bytes([2]) * 100 and again.read(offset).payload == b"late"
    assert again.size == path.stat().st_size == records[-1].end
    again.close()


def test_acknowledgements_wait_for_the_fsync_and_keep_their_order(tmp_path):
    agg = _service(tmp_path, 3, LogPolicy(fsync_every=100, fsync_interval_s=10.0))
    _open(agg)
    messages = update_messages(device_names(3), 1, seed=0)
    _feed(agg, messages[:1])
    agg.take(Message("pw/bench/nonsense", b"?", 7, 1))  # rejected, but behind a held update: waits too
    assert [m.mid for m in agg.journal.held] == [1, 7] and agg.journal.log.pending == 1
    agg.journal.sync()
    assert agg.journal.held == [] and agg.journal.log.records_synced == 1
    assert agg.rejected == {"bad_topic": 1}
    agg.take(Message("pw/bench/nonsense", b"?", 8, 1))  # nothing pending: acknowledged at once
    assert agg.journal.held == []


def _round(run_dir: Path, n: int) -> tuple[Aggregator, list[tuple[str, bytes]]]:
    agg = _service(run_dir, n)
    _open(agg)
    messages = update_messages(device_names(n), 1, seed=3)
    _feed(agg, messages)
    agg._close_round()
    return agg, messages


def test_the_checkpoint_does_not_grow_with_the_number_of_updates(tmp_path):
    small, _ = _round(tmp_path / "small", 10)
    large, messages = _round(tmp_path / "large", 200)
    sizes = [(run / CHECKPOINT_FILE).stat().st_size for run in (tmp_path / "small", tmp_path / "large")]
    logs = [(run / LOG_DIR / "round1.log").stat().st_size for run in (tmp_path / "small", tmp_path / "large")]
    assert abs(sizes[1] - sizes[0]) < 64, sizes  # digits of the round's counts only
    assert logs[1] > 19 * logs[0]  # the updates went to the log
    assert large.history[0]["participants"] == 200 and large.engine.accepted == {}
    # the running sum's aggregate is FedAvg's on the individual decoded updates
    updates = []
    for name, data in messages:
        _, u = decode_update(data)
        updates.append(ClientUpdate(name, u.delta, u.num_examples, u.local_steps))
    want = FedAvg().aggregate(classifier_weights(), updates)
    for got, w in zip(large.weights, want):
        np.testing.assert_allclose(got, w, atol=1e-6, rtol=0)
    assert abs(large.history[0]["loss"] - np.mean([decode_update(d)[1].train_loss for _, d in messages])) < 1e-6


def crash_child(run_dir: str, synced: int, unsynced: int) -> None:
    """Run in a subprocess: accept ``synced`` updates durably, ``unsynced`` more without the fsync (so without
    their acks), then SIGKILL itself."""
    agg = _service(Path(run_dir), 40, LogPolicy(fsync_every=1000, fsync_interval_s=10.0))
    _open(agg)
    messages = update_messages(device_names(40), 1, seed=5)
    _feed(agg, messages[:synced])
    agg.journal.sync()
    _feed(agg, messages[synced:synced + unsynced], first_mid=synced + 1)
    os.kill(os.getpid(), signal.SIGKILL)


def test_killed_mid_round_the_checkpoint_and_the_log_give_the_same_aggregate(tmp_path):
    reference = _service(tmp_path / "ref", 40)
    _open(reference)
    messages = update_messages(device_names(40), 1, seed=5)
    _feed(reference, messages)
    reference._close_round()

    run_dir = tmp_path / "crashed"
    child = subprocess.run([sys.executable, "-c", f"from tests.test_update_log import crash_child; "
                                                  f"crash_child({str(run_dir)!r}, 25, 5)"],
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    logged = len(list(scan(run_dir / LOG_DIR / "round1.log")))
    assert 25 <= logged <= 30  # the 25 acknowledged ones are all there

    again = _service(run_dir, 40)
    assert again.restore() and len(again.accepted) == logged and again.round == 1
    _feed(again, messages[25:], first_mid=100)  # the broker redelivers what was never acknowledged, then the rest
    again.journal.sync()
    assert again.rejected.get("duplicate", 0) == logged - 25
    again._close_round()
    assert again.history[0]["participants"] == 40
    for got, want in zip(again.weights, reference.weights):
        assert np.array_equal(got, want)  # bit for bit: the fixed-point sum does not depend on the order
