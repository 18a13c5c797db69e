"""The aggregator service's crash safety: the round's update log, held acknowledgements, checkpoint, replay.

An accepted update's message is appended to the round's update log (``training.federated.update_log``,
fsynced in batches) and its MQTT acknowledgement waits for the fsync that covers it; the MQTT session is
persistent, so after a crash the broker redelivers whatever was not yet acknowledged. The checkpoint
(``RoundFiles``) is written when a round opens and when it closes, and its size does not depend on the
number of updates. A restarted service loads the checkpoint and replays the round's log through the same
screen as live messages, which resumes the round.

A mixin of ``training.federated.aggregator.Aggregator``: it uses the service's ``engine``, ``files``,
``link``, ``mode``, ``sum_rule``, ``weights``, ``round`` and ``cfg``.
"""
from __future__ import annotations

import logging
from pathlib import Path

from broker.mqtt_link import Message
from broker.topics import TopicMatch
from training.federated.partial_sums import RunningSum, model_size
from training.federated.round_engine import Rejected
from training.federated.update_screen import Selection

log = logging.getLogger(__name__)


class DurableRound:
    """Update log, held acknowledgements, checkpoint and replay of the aggregator service."""

    @property
    def holding_acks(self) -> bool:
        """Acknowledgements wait for the log's next fsync."""
        return bool(self._held)

    def ack_in_order(self, message: Message) -> None:
        """Acknowledge now, or after the log's next fsync when an earlier message waits for it (PUBACKs keep
        the order of the PUBLISHes)."""
        if self.update_log is not None and (self.update_log.pending or self._held):
            self._held.append(message)
        else:
            self.link.ack(message)

    def sync_log(self) -> None:
        """Make the logged updates durable, then acknowledge every held message (in the order received)."""
        if self.update_log is not None:
            self.update_log.sync()
        for message in self._held:
            self.link.ack(message)
        self._held = []

    def _save(self) -> None:
        """The checkpoint (when a round opens and closes; ``RoundFiles``: its size does not grow with the fleet)."""
        self.sync_log()
        self.files.save(self.engine.manifest(), self.engine.state_keys(), self.engine.arrays())

    def log_path(self, round_: int) -> Path:
        return self.files.log_path(round_)

    def _open_log(self) -> None:
        """Start (or reopen) the current round's log and a fresh running sum with the round's rule."""
        if self.update_log is not None:
            if self.update_log.path == self.files.log_path(self.round):
                return
            self.update_log.close()
        self.update_log = self.files.open_log(self.round)
        self.rule = self.sum_rule()  # DP-FedAvg's clip moves between rounds
        self.sums = RunningSum(self.rule, model_size(self.weights)) if self.rule else None

    def _replay(self) -> int:
        """Run the current round's logged messages through the screen again (after a restart)."""
        replayed = 0
        for rec in self.update_log.records():
            self._replaying = rec.offset
            try:
                self.mode.screen_update(self, TopicMatch("update", self.cfg.fleet, rec.round, rec.device),
                                        rec.payload)
                replayed += 1
            except Rejected as rej:  # e.g. a message logged twice: the log is append-only, the screen decides
                log.warning("log replay: %s's round-%d record not taken again (%s)", rec.device, rec.round,
                            rej.reason)
            finally:
                self._replaying = None
        return replayed

    def restore(self) -> bool:
        """Load the checkpoint and replay the current round's log; False when there is no checkpoint."""
        loaded = self.files.load()
        if loaded is None:
            return False
        self.engine.restore(*loaded, {})
        self.engine.selected = Selection(self.engine.selected)
        self._open_log()
        self._replay()
        return True
