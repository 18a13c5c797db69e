"""The aggregator service's crash safety: the round's update log, held acknowledgements, checkpoint, replay.

An accepted update's message is appended to the round's update log (``training.federated.update_log``,
fsynced in batches) and its MQTT acknowledgement waits for the fsync that covers it; the MQTT session is
persistent, so after a crash the broker redelivers whatever was not yet acknowledged. The checkpoint
(``RoundFiles``) is written when a round opens and when it closes, and its size does not depend on the
number of updates. A restarted service loads the checkpoint into the engine and replays the round's log
through the same screen as live messages, which resumes the round.

Why an object of its own (``RoundJournal``): durability needs the run's files, the engine's state and a way
to acknowledge a message, nothing of screening or aggregation; the service holds one and calls it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from broker.mqtt_link import Message
from broker.topics import TopicMatch
from training.federated.round_engine import Rejected, RoundEngine, Selection
from training.federated.round_files import RoundFiles
from training.federated.update_log import UpdateLog

log = logging.getLogger(__name__)

#: Takes one logged message into the round again (the service's round mode); raises Rejected.
Replay = Callable[[TopicMatch, bytes], None]


class RoundJournal:
    """Update log, held acknowledgements, checkpoint and replay of one aggregator service: ``files`` are its
    run directory's, ``engine`` the state it checkpoints, ``ack`` acknowledges a received message."""

    def __init__(self, files: RoundFiles, engine: RoundEngine, ack: Callable[[Message], None]) -> None:
        self.files, self.engine, self.ack = files, engine, ack
        #: The current round's log (None before the first round is opened or restored).
        self.log: UpdateLog | None = None
        #: Acknowledgements waiting for the log's next fsync, in the order received.
        self.held: list[Message] = []
        self._replaying: int | None = None  # the offset of the log record being replayed

    @property
    def holding_acks(self) -> bool:
        """Acknowledgements wait for the log's next fsync."""
        return bool(self.held)

    def due(self) -> bool:
        """The log's batch is full or old enough to be fsynced."""
        return self.log is not None and self.log.due()

    def ack_in_order(self, message: Message) -> None:
        """Acknowledge now, or after the log's next fsync when an earlier message waits for it (PUBACKs keep
        the order of the PUBLISHes)."""
        if self.log is not None and (self.log.pending or self.held):
            self.held.append(message)
        else:
            self.ack(message)

    def sync(self) -> None:
        """Make the logged updates durable, then acknowledge every held message (in the order received)."""
        if self.log is not None:
            self.log.sync()
        for message in self.held:
            self.ack(message)
        self.held = []

    def save(self) -> None:
        """The checkpoint (when a round opens and closes; ``RoundFiles``: its size does not grow with the fleet)."""
        self.sync()
        self.files.save(self.engine.manifest(), self.engine.state_keys(), self.engine.arrays())

    def log_path(self, round_: int) -> Path:
        return self.files.log_path(round_)

    def open(self, round_: int) -> bool:
        """Start (or reopen) ``round_``'s log; False when it is already the open one (nothing changes)."""
        if self.log is not None:
            if self.log.path == self.files.log_path(round_):
                return False
            self.log.close()
        self.log = self.files.open_log(round_)
        return True

    def append(self, device: str, round_: int, data: bytes) -> int:
        """Log an accepted update's message; returns its record's offset (during a replay: the replayed
        record's, which is already there)."""
        return self._replaying if self._replaying is not None else self.log.append(device, round_, data)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    def load(self) -> bool:
        """The checkpoint into the engine (the current round's log is the caller's to reopen and ``replay``);
        False when there is no checkpoint."""
        loaded = self.files.load()
        if loaded is None:
            return False
        self.engine.restore(*loaded, {})
        self.engine.selected = Selection(self.engine.selected)
        return True

    def replay(self, take: Replay, fleet: str) -> int:
        """Run the open log's messages through ``take`` again (after a restart); returns how many it took."""
        replayed = 0
        for rec in self.log.records():
            self._replaying = rec.offset
            try:
                take(TopicMatch("update", fleet, rec.round, rec.device), rec.payload)
                replayed += 1
            except Rejected as rej:  # e.g. a message logged twice: the log is append-only, the screen decides
                log.warning("log replay: %s's round-%d record not taken again (%s)", rec.device, rec.round,
                            rej.reason)
            finally:
                self._replaying = None
        return replayed
