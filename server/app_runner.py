"""The running server: database (migrated), bus ingest, and the web app under uvicorn, in one process."""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from broker.consent import Consent, encode_consent
from broker.mqtt_link import BrokerSettings, BrokerUnavailable, MqttLink
from broker.topics import FleetTopics
from server.context import WebContext
from server.db import display_url
from server.events import EventHub
from server.fleet_actions import ActionFailed, FleetActions
from server.ingest import Ingest, IngestConfig
from server.repository import Store
from server.web import create_app

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    db: str
    #: mqtt(s)://HOST:PORT or a BrokerSettings (TLS); empty: serve the database only (no ingest; consent is
    #: published at the next start)
    broker: "str | BrokerSettings"
    fleet: str
    host: str = "127.0.0.1"
    port: int = 8080
    registry: dict[str, int] = field(default_factory=dict)
    #: Ed25519 public key that releases must verify against (None: recorded as unverified).
    release_key: Any = None
    #: Ed25519 private key that signs consent records (None: published unsigned).
    signing_key: Any = None
    #: The fleet's release signing key (the aggregator's): enables "Roll back" on the models page. Never
    #: implied by ``signing_key``.
    release_signing_key: Any = None
    #: The clinic's label key: enables beat labelling on the alerts page.
    labels_key: Any = None
    #: Where pins are published, as the aggregator (the one identity the ACL lets write pins); default: broker.
    aggregator_broker: "str | BrokerSettings" = ""
    secure_cookies: bool = False
    #: Also ingest every other fleet on the broker (each seed of `pulsewire fleet` is its own fleet).
    all_fleets: bool = False

    def __post_init__(self) -> None:
        FleetTopics(self.fleet)
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port}: use 1-65535")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen {text!r}: use HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


class FleetServer:
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.store = Store(cfg.db)
        self.hub = EventHub()
        self.ingest = Ingest(self.store, IngestConfig(cfg.fleet, cfg.broker, dict(cfg.registry), cfg.release_key,
                                                      all_fleets=cfg.all_fleets),
                             self.hub) if cfg.broker else None
        self.topics = FleetTopics(cfg.fleet)
        self.context = WebContext(self.store, self.hub, cfg.fleet, secure_cookies=cfg.secure_cookies,
                                  publish_consent=self.publish_consent if self.ingest else None,
                                  actions=FleetActions(cfg.fleet, self.publish_acknowledged, cfg.release_signing_key,
                                                       cfg.labels_key) if self.ingest else None)
        self.app = create_app(self.context)

    def publish_consent(self, patient: str, training: bool, strip: bool, version: int) -> None:
        consent = Consent(self.cfg.fleet, patient, training, strip, version,
                          dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        self.ingest.link.publish(self.topics.consent(patient), encode_consent(consent, self.cfg.signing_key),
                                 qos=1, retain=True)

    def publish_acknowledged(self, topic: str, data: bytes, identity: str) -> None:
        """Publish retained (QoS 1) and wait for the broker's acknowledgement. Labels go over the server's own
        (clinic) connection; pins over a short connection as the aggregator, whose ACL alone writes them."""
        if identity == "clinic":
            self._wait_acked(self.ingest.link.publish(topic, data, qos=1, retain=True), topic)
            return
        link = MqttLink(self.cfg.aggregator_broker or self.cfg.broker, f"pw-{self.cfg.fleet}-server-pin", [],
                        lambda _m: None, clean_session=True)
        try:
            link.start(timeout_s=10)
        except BrokerUnavailable as exc:
            raise ActionFailed(503, str(exc)) from None
        try:
            self._wait_acked(link.publish(topic, data, qos=1, retain=True), topic)
        finally:
            link.stop()

    @staticmethod
    def _wait_acked(info, topic: str) -> None:
        try:
            info.wait_for_publish(timeout=10)
        except (RuntimeError, ValueError) as exc:  # paho: queue full, or the message was dropped
            raise ActionFailed(503, f"{topic} not sent ({exc}): check the broker connection, then retry") from None
        if not info.is_published():
            raise ActionFailed(503, f"the broker did not acknowledge {topic}: check the connection, then retry")

    def republish_consents(self) -> None:
        """Every stored record again (retained): a broker that lost its state learns them back."""
        with self.store.session() as repo:
            rows = [(c.patient, c.training, c.strip, c.version) for c in repo.consents() if c.fleet == self.cfg.fleet]
        for row in rows:
            self.publish_consent(*row)

    def serve(self) -> None:
        if self.ingest is not None:
            self.ingest.start()
            self.republish_consents()
        log.info("fleet %s: serving http://%s:%d (ingest from %s, database %s)", self.cfg.fleet, self.cfg.host,
                 self.cfg.port, self.cfg.broker or "nowhere: database only", display_url(self.cfg.db))
        try:
            uvicorn.Server(uvicorn.Config(self.app, host=self.cfg.host, port=self.cfg.port, log_level="warning",
                                          access_log=False)).run()
        finally:
            if self.ingest is not None:
                self.ingest.stop()
            self.store.close()
