"""What a received message is, and whether its sender may say it: the aggregator service's screen.

Every message on the fleet's topics is routed here first (``UpdateScreen.route``): a device's status is
noted (selection reads it; a declined round is told to the engine), an update is checked against the fleet's
registry and handed back to the caller, whose round mode decodes it with ``decode`` (or, secure aggregation,
``verified_parts`` and ``check_sender``). Anything that cannot enter the round (malformed bytes, unknown
device, wrong fleet, bad signature, wrong device id) raises ``Rejected``, and ``count`` files it under its
reason in the engine's counters (they are checkpointed with the engine), so the service logs it, acknowledges
it and keeps serving.

Why an object of its own: the screen needs the fleet's registry and keys and the engine's counters, nothing
of the transport, the log or the running sum; the service holds one and calls it.
"""
from __future__ import annotations

import logging

from broker.device_messages import decode_status
from broker.fed_messages import decode_update, fleet_id
from broker.mqtt_link import Message
from broker.signing import verify_message, verify_split
from broker.topics import TopicMatch, parse_topic
from broker.wire import Header, WireError, decode_header
from training.federated.aggregator_config import AggregatorConfig
from training.federated.round_engine import Rejected, RoundEngine
from training.federated.strategies import ClientUpdate

log = logging.getLogger(__name__)


class UpdateScreen:
    """Routing, verifying and decoding what devices send, for one fleet (``cfg``: its registry and keys);
    rejections are counted in ``engine``'s counters. ``status``: each device's last status report."""

    def __init__(self, cfg: AggregatorConfig, engine: RoundEngine) -> None:
        self.cfg, self.engine = cfg, engine
        self.status: dict[str, dict] = {}

    def route(self, message: Message) -> TopicMatch | None:
        """The topic of an update from a registered device (the caller's round mode takes it from there);
        None for anything else that needs no more (a status, noted here; another kind). Raises Rejected."""
        try:
            topic = parse_topic(message.topic)
        except ValueError as exc:
            raise Rejected("bad_topic", str(exc)) from exc
        if topic.kind == "status":
            self.note_status(topic.device, message.payload)
            return None
        if topic.kind != "update":
            return None
        self.engine.round_counts["bytes_received"] += len(message.payload)
        if topic.device not in self.cfg.devices:
            raise Rejected("unknown_device", f"{topic.device!r} is not registered in fleet {self.cfg.fleet}")
        return topic

    def count(self, rejected: Rejected, where: str) -> None:
        """File a rejection under its reason (total and this round's) and log it with the topic ``where``."""
        self.engine.reject(rejected.reason)
        log.warning("rejected message on %s (%s): %s", where, rejected.reason, rejected.detail)

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

    def note_status(self, device: str, payload: bytes) -> None:
        """A device's status (an empty payload: a retained status cleared); a declined round goes to the engine."""
        if not payload:
            return
        try:
            _, status = decode_status(payload)
        except WireError as exc:
            raise Rejected("bad_status", f"status of {device}: {exc}") from exc
        self.status[device] = status
        declined = status.get("declined_round")
        if isinstance(declined, int) and self.engine.decline(device, declined):
            log.warning("round %d: %s declined (%s); not waiting for it", self.engine.round, device,
                        status.get("reason"))
