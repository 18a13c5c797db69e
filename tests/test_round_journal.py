"""The aggregator's journal on its own: acknowledgements held until the log's fsync, the checkpoint into a fresh
engine, and the replay of a round's log (a refused record skipped, a replayed one not logged twice)."""
from __future__ import annotations

import numpy as np

from broker.mqtt_link import Message
from broker.topics import TopicMatch
from tools.aggregator_bench import FLEET, classifier_weights, device_names
from training.federated.aggregator_config import RoundPolicy
from training.federated.round_durability import RoundJournal
from training.federated.round_engine import Rejected, RoundEngine
from training.federated.round_files import RoundFiles
from training.federated.strategies import FedAvg
from training.federated.update_log import LogPolicy

DEVICES = list(device_names(3))


def _journal(run_dir, acked: list[int]) -> RoundJournal:
    engine = RoundEngine(FedAvg(), DEVICES, RoundPolicy(), 3, classifier_weights())
    files = RoundFiles(run_dir, FLEET, "fedavg", 1, LogPolicy(fsync_every=100, fsync_interval_s=10.0))
    return RoundJournal(files, engine, lambda message: acked.append(message.mid))


def test_acknowledgements_wait_for_the_fsync_that_covers_the_record_and_keep_their_order(tmp_path):
    acked: list[int] = []
    journal = _journal(tmp_path, acked)
    journal.ack_in_order(Message("t", b"", 1, 1))  # no log yet: acknowledged at once
    assert journal.open(1) and not journal.open(1)  # the same round's log stays open

    journal.append(DEVICES[0], 1, b"update")
    journal.ack_in_order(Message("t", b"", 2, 1))
    journal.ack_in_order(Message("t", b"", 3, 1))  # nothing logged, but an earlier ack waits: it waits too
    held = [m.mid for m in journal.held]
    journal.sync()

    assert held == [2, 3] and acked == [1, 2, 3]
    assert not journal.holding_acks and journal.log.records_synced == 1


def test_a_checkpoint_restores_the_engine_and_the_replay_skips_what_the_screen_refuses(tmp_path):
    journal = _journal(tmp_path, [])
    journal.engine.open_round()
    journal.engine.weights = [w + 1 for w in journal.engine.weights]
    journal.save()
    journal.open(1)
    offsets = [journal.append(d, 1, d.encode()) for d in DEVICES]
    journal.sync()
    journal.close()

    again = _journal(tmp_path, [])
    taken: list[tuple[str, int]] = []

    def take(topic: TopicMatch, payload: bytes) -> None:
        if topic.device == DEVICES[1]:
            raise Rejected("duplicate", "logged twice")
        taken.append((topic.device, again.append(topic.device, topic.round, payload)))

    assert again.load() and again.open(again.engine.round)
    replayed = again.replay(take, FLEET)

    assert again.engine.round == 1 and list(again.engine.selected) == DEVICES
    for got, want in zip(again.engine.weights, journal.engine.weights):
        np.testing.assert_array_equal(got, want)
    assert replayed == 2 and taken == [(DEVICES[0], offsets[0]), (DEVICES[2], offsets[2])]
    assert len(again.log.records()) == 3  # a replayed record is not appended again
    assert not _journal(tmp_path / "empty", []).load()
