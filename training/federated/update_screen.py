"""How a received message enters a round: the aggregator service's one screening path.

Every message on the fleet's topics goes through ``UpdateScreen._handle``: anything that cannot enter the
round (malformed bytes, unknown device, wrong fleet, bad signature, stale or future round, duplicate, NaN,
wrong shapes) is logged, counted by reason and acknowledged, and the service keeps serving. An accepted update
is logged (the message bytes, for crash recovery) and, for strategies that allow it, added into the round's
fixed-point running sum and forgotten, so an update costs O(1) whatever the round's size.

A mixin of ``training.federated.aggregator.Aggregator``: it uses the service's ``cfg``, ``engine``, ``mode``,
``link``, ``status``, ``sums``, ``update_log`` and ``ack_in_order`` (``round_durability``).
"""
from __future__ import annotations

import logging

from broker.device_messages import decode_status
from broker.fed_messages import decode_update, fleet_id
from broker.mqtt_link import Message
from broker.signing import verify_message, verify_split
from broker.topics import parse_topic
from broker.wire import Header, WireError, decode_header
from training.federated.round_engine import Rejected
from training.federated.strategies import ClientUpdate

log = logging.getLogger(__name__)


class Selection(list):
    """A round's selected devices with O(1) membership: the engine asks ``device in selected`` for every
    update, which on a plain list of 10,000 names costs more than the rest of the update's screen."""

    def __init__(self, names=()) -> None:
        super().__init__(names)
        self._names = frozenset(self)

    def __contains__(self, name: object) -> bool:
        return name in self._names


class UpdateScreen:
    """Screening, decoding and accepting what devices send (the receive half of the aggregator service)."""

    def _handle(self, message: Message) -> None:
        try:
            self._screen(message)
        except Rejected as rej:
            self.engine.reject(rej.reason)
            log.warning("rejected message on %s (%s): %s", message.topic, rej.reason, rej.detail)
            if self.cfg.observer:
                self.cfg.observer.rejected(self.link, self.round, message.topic, rej.reason, rej.detail)
        finally:
            self.ack_in_order(message)

    def _screen(self, message: Message) -> None:
        try:
            topic = parse_topic(message.topic)
        except ValueError as exc:
            raise Rejected("bad_topic", str(exc)) from exc
        if topic.kind == "status":
            self._note_status(topic.device, message.payload)
            return
        if topic.kind != "update":
            return
        self.engine.round_counts["bytes_received"] += len(message.payload)
        if topic.device not in self.cfg.devices:
            raise Rejected("unknown_device", f"{topic.device!r} is not registered in fleet {self.cfg.fleet}")
        self.mode.screen_update(self, topic, message.payload)

    def verified(self, device: str, data: bytes) -> bytes:
        """``data`` without its signature, verified with ``device``'s registered key (unsigned fleets: as is).
        Raises WireError for a bad signature, Rejected for a device without a key."""
        if self.cfg.device_keys is None:
            return data
        return verify_message(data, self._device_key(device))

    def verified_parts(self, device: str, data: bytes) -> tuple[Header, bytes]:
        """``verified``'s header and plain body, for a decoder that reads the body directly (no re-framing)."""
        return decode_header(data) if self.cfg.device_keys is None else verify_split(data, self._device_key(device))

    def _device_key(self, device: str):
        if device not in self.cfg.device_keys:
            raise Rejected("unknown_device", f"no public key registered for {device}")
        return self.cfg.device_keys[device]

    def check_sender(self, device: str, header: Header) -> None:
        """The message's header must name this fleet and the device's registered wire id."""
        if header.fleet_id != fleet_id(self.cfg.fleet):
            raise Rejected("wrong_fleet", f"fleet id {header.fleet_id:#x} is not {self.cfg.fleet}'s")
        if header.device_id != self.cfg.devices[device]:
            raise Rejected("device_mismatch", f"{device} sent device id {header.device_id}, registered "
                                              f"{self.cfg.devices[device]}")

    def decode(self, device: str, data: bytes) -> tuple[int, ClientUpdate]:
        """A whole UPDATE message (signed or not) from ``device``: its round and the update; raises Rejected."""
        try:
            plain = self.verified(device, data)
        except WireError as exc:
            raise Rejected(exc.reason, str(exc)) from exc
        return self.decode_plain(device, plain)

    def decode_plain(self, device: str, plain: bytes) -> tuple[int, ClientUpdate]:
        """An UPDATE message whose signature was already checked (or that has none): decoded and its sender
        checked; raises Rejected."""
        try:
            header, update = decode_update(plain)
        except WireError as exc:
            raise Rejected(exc.reason, str(exc)) from exc
        self.check_sender(device, header)
        return header.round, ClientUpdate(device, update.delta, update.num_examples, update.local_steps,
                                          update.control_delta, {"train_loss": update.train_loss})

    def _accept(self, round_: int, update: ClientUpdate, data: bytes) -> ClientUpdate:
        """Screen an update; an accepted one is logged (the message bytes) and, with a running sum, added to it
        and forgotten: the engine keeps only its weight and metadata. O(1) whatever the round's size. Returns
        the update as it entered the round."""
        device = self.engine.accept(update.device, round_, update).device
        kept = self.engine.accepted[device]
        offset = self._replaying if self._replaying is not None else self.update_log.append(device, round_, data)
        if self.sums is not None:
            self.sums.add(kept, offset)
            self.engine.accepted[device] = ClientUpdate(device, [], kept.num_examples, kept.local_steps, None,
                                                        kept.meta)
        log.debug("round %d: accepted %s (%d examples)", self.round, device, kept.num_examples)
        return kept

    def _note_status(self, device: str, payload: bytes) -> None:
        if not payload:
            return
        try:
            _, status = decode_status(payload)
        except WireError as exc:
            raise Rejected("bad_status", f"status of {device}: {exc}") from exc
        self.status[device] = status
        declined = status.get("declined_round")
        if isinstance(declined, int) and self.engine.decline(device, declined):
            log.warning("round %d: %s declined (%s); not waiting for it", self.round, device, status.get("reason"))
