"""The bus consumer: statuses, alerts, round events and releases into the database, nothing lost.

One persistent MQTT session (stable client id, clean_session False, QoS 1) with manual acknowledgement:
a worker thread takes a batch of received messages, stores them in one transaction, commits, and
only then acknowledges each to the broker. A server killed before the commit has acknowledged
nothing, so the broker delivers those messages again; alerts are deduplicated by ``alert_id``, so a
redelivery is stored once. Malformed messages are rejected with a reason, counted (``rejected.*``
counters, visible in the API), logged as security events, and acknowledged: they never stop ingest.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from broker.device_messages import decode_alert, decode_status
from broker.fed_messages import fleet_id
from broker.model_pin import verify_pin
from broker.model_release import MAGIC as RELEASE_MAGIC, ReleaseError, verify_release
from broker.mqtt_link import BrokerSettings, Message, MqttLink
from broker.round_events import decode_round_event
from broker.topics import FleetTopics, TopicMatch, any_fleet_subscriptions, parse_topic
from broker.wire import WireError
from server.events import EventHub
from server.repository import Repository, Store

log = logging.getLogger(__name__)

BATCH = 500


@dataclass(frozen=True)
class IngestConfig:
    fleet: str
    broker_url: "str | BrokerSettings"
    #: Enrolled devices (name -> wire device id); anyone else is stored but listed as unknown.
    registry: dict[str, int] = field(default_factory=dict)
    #: Ed25519 public key of the aggregator: releases that do not verify are security events.
    release_key: Any = None
    client_id: str = ""
    #: Also store what any other fleet on the broker says (e.g. one federation per seed, each its own fleet).
    all_fleets: bool = False

    def __post_init__(self) -> None:
        FleetTopics(self.fleet)  # validates the name


class Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class Ingest:
    def __init__(self, store: Store, cfg: IngestConfig, hub: EventHub | None = None) -> None:
        self.store, self.cfg, self.hub = store, cfg, hub or EventHub()
        self.topics = FleetTopics(cfg.fleet)
        self._inbox: queue.Queue[Message] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        subscriptions = [self.topics.all_statuses(), self.topics.all_alerts(), self.topics.release(),
                         self.topics.pin(), self.topics.all_round_events()]
        if cfg.all_fleets:
            subscriptions = any_fleet_subscriptions()
        self.link = MqttLink(cfg.broker_url, cfg.client_id or f"pw-{cfg.fleet}-server", subscriptions,
                             self._inbox.put, manual_ack=True)
        with store.session() as repo:
            if cfg.registry:
                repo.register_devices(cfg.fleet, cfg.registry)

    def start(self, wait: bool = True) -> None:
        self._thread.start()
        self.link.start(wait=wait)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.link.stop()

    # ------------------------------------------------------------------ the worker
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = [self._inbox.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < BATCH:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            self._store_batch(batch)

    def _store_batch(self, batch: list[Message]) -> None:
        """Commit the whole batch, then ack. If the batch fails, store its messages one by one: one the
        database refuses while it answers otherwise is counted as ``rejected.store_error`` (a poison message
        must not block the queue); while the database is unreachable nothing is acknowledged and the batch
        is retried, so a crash meanwhile loses nothing either."""
        if self._commit(batch):
            return
        for message in batch:
            while not self._stop.is_set() and not self._commit([message]):
                if self._database_answers():
                    with self.store.session() as repo:
                        repo.count("rejected.store_error")
                    self.link.ack(message)
                    break
                time.sleep(1.0)

    def _commit(self, batch: list[Message]) -> bool:
        notes: list[tuple[str, dict]] = []
        try:
            with self.store.session() as repo:
                repo.preload_devices(_named_devices(batch))
                for message in batch:
                    notes.extend(self._handle(repo, message))
        except Exception:
            log.exception("storing %d message(s) failed", len(batch))
            return False
        for message in batch:
            self.link.ack(message)
        for kind, data in notes:
            self.hub.publish(kind, data)
        return True

    def _database_answers(self) -> bool:
        try:
            with self.store.session() as repo:
                repo.counters()
            return True
        except Exception:
            return False

    def _handle(self, repo: Repository, message: Message) -> list[tuple[str, dict]]:
        """Store one message; a malformed one is counted and logged in the same transaction (every check
        runs before the first write, so a rejected message has written nothing)."""
        try:
            return self._dispatch(repo, message)
        except Rejected as rej:
            repo.count(f"rejected.{rej.reason}")
            device = None
            try:
                device = parse_topic(message.topic).device
            except ValueError:
                pass
            repo.security_event("ingest", rej.reason, device, None, f"{message.topic}: {rej.detail}"[:500])
            log.warning("rejected message on %s (%s): %s", message.topic, rej.reason, rej.detail[:200])
            return [("counters", {"reason": rej.reason})]

    def _dispatch(self, repo: Repository, message: Message) -> list[tuple[str, dict]]:
        try:
            topic = parse_topic(message.topic)
        except ValueError as exc:
            raise Rejected("bad_topic", str(exc)) from None
        if topic.fleet != self.cfg.fleet and not self.cfg.all_fleets:
            raise Rejected("wrong_fleet", f"topic of fleet {topic.fleet}")
        if not message.payload:  # a retained message being cleared
            return []
        handler = {"status": self._status, "alert": self._alert, "round": self._round_event,
                   "release": self._release, "pin": self._pin}.get(topic.kind)
        if handler is None:
            return []
        notes = handler(repo, topic, message.payload)
        repo.count(f"stored.{topic.kind}")
        return notes

    def _decode(self, decoder, payload: bytes, topic: TopicMatch):
        try:
            header, body = decoder(payload)
        except WireError as exc:
            raise Rejected(f"bad_{topic.kind}_{exc.reason}", str(exc)) from None
        _check_values(body, f"bad_{topic.kind}")
        if header.fleet_id != fleet_id(topic.fleet):
            raise Rejected("wrong_fleet", f"fleet id {header.fleet_id:#x} is not {topic.fleet}'s")
        expected = self.cfg.registry.get(topic.device)
        if expected is not None and header.device_id != expected:
            raise Rejected("device_mismatch", f"{topic.device} sent device id {header.device_id}, enrolled {expected}")
        return header, body

    def _status(self, repo: Repository, topic: TopicMatch, payload: bytes) -> list[tuple[str, dict]]:
        header, status = self._decode(decode_status, payload, topic)
        dev = repo.record_status(topic.fleet, topic.device, header.device_id, status,
                                 topic.device in self.cfg.registry)
        return [("device", {"name": dev.name, "state": dev.state, "last_seen": dev.last_seen.isoformat(),
                            "registered": dev.registered})]

    def _alert(self, repo: Repository, topic: TopicMatch, payload: bytes) -> list[tuple[str, dict]]:
        _, alert = self._decode(decode_alert, payload, topic)
        if alert["device"] != topic.device:
            raise Rejected("device_mismatch", f"alert names device {str(alert['device'])[:64]!r} on "
                                              f"{topic.device}'s topic")
        for key in ("beats", "confidence_permille", "heart_rate_bpm"):
            if not isinstance(alert[key], int) or isinstance(alert[key], bool) or not 0 <= alert[key] < 2**31:
                raise Rejected("bad_alert_bad_meta", f"{key} must be a non-negative 32-bit integer")
        for key in ("alert_id", "patient", "kind", "class", "time", "model_version"):
            if not isinstance(alert[key], str):
                raise Rejected("bad_alert_bad_meta", f"{key} must be a string")
        row = repo.record_alert(topic.fleet, alert, topic.device in self.cfg.registry)
        if row is None:
            repo.count("duplicate.alert")
            return []
        return [("alert", alert_summary(row.body, row.received.isoformat()))]

    def _round_event(self, repo: Repository, topic: TopicMatch, payload: bytes) -> list[tuple[str, dict]]:
        try:
            event = decode_round_event(payload)
        except WireError as exc:
            raise Rejected(f"bad_round_{exc.reason}", str(exc)) from None
        _check_values(event, "bad_round")
        if event["fleet"] != topic.fleet or event["round"] != topic.round or event["event"] != topic.name:
            raise Rejected("round_mismatch", "event fleet, round or name differs from its topic")
        row = repo.record_round_event(event)
        if row is None:
            return [("security", {"reason": event["reason"], "round": event["round"]})]
        return [("round", {"fleet": row.fleet, "round": row.round, "state": row.state, "metrics": row.metrics,
                           "participants": row.participants, "bytes_received": row.bytes_received})]

    def _release(self, repo: Repository, topic: TopicMatch, payload: bytes) -> list[tuple[str, dict]]:
        key = self.cfg.release_key
        if key is not None:
            try:
                rel = verify_release(payload, key)
            except ReleaseError as exc:
                raise Rejected(f"release_{exc.reason}", str(exc)) from None
            version, digest = rel.version, rel.signal_digest
            signer = hashlib.sha256(key.public_bytes_raw()).hexdigest()[:16]
        else:
            version, digest = _unverified_manifest(payload)
            signer = "unverified"
        if repo.record_release(topic.fleet, version, signer, len(payload), digest):
            return [("release", {"version": version, "signer": signer})]
        return []


    def _pin(self, repo: Repository, topic: TopicMatch, payload: bytes) -> list[tuple[str, dict]]:
        """A rollback pin: verified with the release key when the server has it (a forged pin is a security
        event), otherwise shown as "unverified"."""
        key = self.cfg.release_key
        try:
            pin = verify_pin(payload, key)
        except ReleaseError as exc:
            raise Rejected(f"pin_{exc.reason}", str(exc)) from None
        if pin.fleet != topic.fleet:
            raise Rejected("wrong_fleet", f"pin of fleet {pin.fleet[:64]!r} on {topic.fleet}'s topic")
        _check_values(pin.sequence, "bad_pin")
        signer = hashlib.sha256(key.public_bytes_raw()).hexdigest()[:16] if key is not None else "unverified"
        if repo.record_pin(topic.fleet, pin.version, list(pin.revoked), pin.sequence, signer):
            return [("release", {"pinned": pin.version, "revoked": list(pin.revoked), "signer": signer})]
        return []


def _named_devices(batch: list[Message]) -> set[tuple[str, str]]:
    keys = set()
    for message in batch:
        try:
            topic = parse_topic(message.topic)
        except ValueError:
            continue
        if topic.device is not None:
            keys.add((topic.fleet, topic.device))
    return keys


def _check_values(obj: Any, reason: str, depth: int = 0) -> None:
    """Refuse what a database would refuse later (NUL characters: PostgreSQL text cannot hold them; integers
    beyond 64 bits), so that every rejection happens before the first write."""
    if isinstance(obj, str):
        if "\x00" in obj:
            raise Rejected(reason + "_nul", "a string holds a NUL character")
    elif isinstance(obj, float):
        if not math.isfinite(obj):  # "1e999" parses to inf
            raise Rejected(reason + "_range", "a number is not finite")
    elif isinstance(obj, int):
        if not -2**63 <= obj < 2**63:
            raise Rejected(reason + "_range", "an integer exceeds 64 bits")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_values(k, reason, depth + 1)
            _check_values(v, reason, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _check_values(v, reason, depth + 1)


def _unverified_manifest(payload: bytes) -> tuple[int, str | None]:
    """Version and signal digest read from a release's manifest when the server holds no key to verify it."""
    try:
        if not payload.startswith(RELEASE_MAGIC):
            raise ValueError("not a release")
        (n,) = struct.unpack_from("<I", payload, len(RELEASE_MAGIC))
        start = len(RELEASE_MAGIC) + 4
        manifest = json.loads(payload[start:start + n])
        return int(manifest["version"]), str(manifest.get("signal_digest"))[:128]
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise Rejected("release_corrupt", f"release manifest unreadable ({exc})") from None


def alert_summary(alert: dict[str, Any], received: str) -> dict[str, Any]:
    """What the live alerts page needs of an alert (the strip included when the device sent one)."""
    keys = ("alert_id", "device", "patient", "kind", "class", "time", "beats", "confidence_permille",
            "heart_rate_bpm", "model_version", "strip")
    return {**{k: alert[k] for k in keys if k in alert}, "received": received}
