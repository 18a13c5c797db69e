"""One MQTT connection as the aggregator and the devices need it: persistent session, QoS 1, reconnects.

paho-mqtt runs the network loop in its own thread and reconnects with exponential backoff. The link
re-subscribes on every connect (a broker that lost its state has lost the subscriptions too) and
tells its owner about connects, so a device can re-send an update the broker never acknowledged.
With ``manual_ack`` a QoS 1 message is acknowledged only when the owner says so: the aggregator acks
an update after it is durable in its update log, so a crash in between makes the broker deliver it again.

A broker URL may list several nodes of a cluster (``mqtt://h:1883,mqtt://h:1884``): when the connection
drops or cannot be made, the link moves to the next node (round robin) and keeps its session's client id,
so a durable session replicated by the cluster (RabbitMQ's quorum queues) resumes there. ``mqtt5=True``
speaks MQTT 5 (shared subscriptions ``$share/GROUP/TOPIC`` are MQTT 5; a persistent session is a session
expiry interval, ``SESSION_EXPIRY_S``).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.launcher import BrokerUnavailable

log = logging.getLogger(__name__)

#: MQTT 5 persistent sessions: how long the broker keeps one after a disconnect (one week).
SESSION_EXPIRY_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int


@dataclass(frozen=True)
class TlsFiles:
    """CA certificate, and this client's certificate and key (its common name is its MQTT user name)."""

    ca: str
    cert: str | None
    key: str | None


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how to prove who we are: the one object every MQTT component takes.

    ``mqtts://`` needs the fleet's CA (to check the broker) and, with the generated Mosquitto config
    (``require_certificate``), this client's certificate and key, whose common name is its MQTT user name.
    ``username`` is for brokers that authenticate by name (it is ignored by ``use_identity_as_username``).
    Files are checked here so that a wrong path fails when a command starts, with what to pass instead.
    """

    url: str
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    username: str | None = None

    def __post_init__(self) -> None:
        schemes = {u.strip().partition("://")[0] if "://" in u else "mqtt" for u in self.url.split(",")}
        self.endpoints  # each URL must parse
        if len(schemes) > 1:
            raise ValueError(f"{self.url}: the nodes of one cluster must all be mqtt:// or all mqtts://")
        if (self.cert is None) != (self.key is None):
            raise ValueError("give a client certificate and its key together (--cert and --key)")
        tls_files = [f for f in (self.ca, self.cert, self.key) if f is not None]
        if self.tls_enabled and self.ca is None:
            raise ValueError(f"{self.url} is TLS: pass the fleet's CA certificate (--ca ca.crt) and this client's "
                             "certificate and key (--cert, --key), or --fleet-config with them")
        if tls_files and not self.tls_enabled:
            raise ValueError(f"certificates given for {self.url}: use mqtts://HOST:PORT to connect with TLS")
        for path in tls_files:
            if not os.path.isfile(path):
                raise ValueError(f"TLS file {path} not found; check --ca/--cert/--key or the fleet config")

    @property
    def tls_enabled(self) -> bool:
        return self.url.startswith("mqtts://")

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        """(host, port) of each node, in the order given."""
        return [parse_broker_url(u.strip()) for u in self.url.split(",")]

    @property
    def tls(self) -> TlsFiles | None:
        return TlsFiles(self.ca, self.cert, self.key) if self.tls_enabled else None

    @classmethod
    def of(cls, broker: "BrokerSettings | str") -> "BrokerSettings":
        """A plain URL (``mqtt://`` only) becomes settings without TLS; settings pass unchanged."""
        return broker if isinstance(broker, BrokerSettings) else cls(str(broker))


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    retain: bool = True


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` (port 1883 when omitted) or ``mqtts://host:port`` (TLS, port 8883)."""
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ValueError(f"broker URL {url!r} not understood; use mqtt://HOST:PORT or mqtts://HOST:PORT")
    return parsed.hostname, parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)


class MqttLink:
    def __init__(self, broker: BrokerSettings | str, client_id: str, subscriptions: list[str], on_message: Callable[[Message], None],
                 on_connect: Callable[[bool], None] | None = None, will: Will | None = None,
                 manual_ack: bool = False, keepalive_s: int = 20, tls: TlsFiles | None = None,
                 clean_session: bool = False, mqtt5: bool = False) -> None:
        """``clean_session=True`` for observers that must not leave a session (and its queue) on the broker;
        ``mqtt5`` for shared subscriptions."""
        if tls is not None:  # the older spelling: a URL plus TLS files
            broker = BrokerSettings(str(broker), tls.ca, tls.cert, tls.key)
        self.settings = settings = BrokerSettings.of(broker)
        self._endpoints = settings.endpoints
        self._node = 0
        self.host, self.port = self._endpoints[0]
        self._clean, self._mqtt5 = clean_session, mqtt5
        self.client_id = client_id
        self._subscriptions = subscriptions
        self._on_message = on_message
        self._on_connect = on_connect
        self._keepalive = keepalive_s
        self.connected = threading.Event()
        #: connected and every subscription acknowledged (SUBACK): a message published after this is set
        #: reaches us. On a cluster whose retained copies are node-local, "connected" alone is not enough.
        self.ready = threading.Event()
        self._pending_subs: set[int] = set()
        self._subs_lock = threading.Lock()
        self.connects = 0
        self._refused: str | None = None
        if mqtt5:
            self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                       manual_ack=manual_ack)
        else:
            self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                       clean_session=clean_session, protocol=mqtt.MQTTv311, manual_ack=manual_ack)
        self._client.reconnect_delay_set(min_delay=1, max_delay=16)
        self._client.max_queued_messages_set(0)  # unbounded: an update must not be dropped while offline
        self._client.max_inflight_messages_set(100)
        if settings.tls is not None:
            self._client.tls_set(ca_certs=settings.ca, certfile=settings.cert, keyfile=settings.key)
        if settings.username:
            self._client.username_pw_set(settings.username)
        if will:
            self._client.will_set(will.topic, will.payload, qos=1, retain=will.retain)
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._client.on_subscribe = self._subscribed
        self._client.on_connect_fail = lambda _c, _u: self._next_node()
        self._client.on_message = lambda _c, _u, m: self._on_message(Message(m.topic, bytes(m.payload), m.mid, m.qos))

    def start(self, timeout_s: float = 15.0, wait: bool = True) -> None:
        """Connect (retrying in the background with backoff); with ``wait``, until the first connection is
        up. A device that must work offline starts with ``wait=False``."""
        self._connect_async()
        self._client.loop_start()
        deadline = time.monotonic() + timeout_s
        if wait and not (self.connected.wait(timeout_s) and self.ready.wait(max(0.0, deadline - time.monotonic()))):
            self.stop()
            hint = (f"; the broker refused us: {self._refused}" if self._refused else
                    "; check that the broker runs, and for mqtts:// that --ca is the fleet's CA and --cert/--key "
                    "belong to an enrolled client" if self.settings.tls_enabled else
                    "; start one or pass --broker mqtt://HOST:PORT")
            raise BrokerUnavailable(f"{self.client_id}: no MQTT connection to {self.host}:{self.port} within "
                                    f"{timeout_s:.0f} s{hint}")

    def _connect_async(self) -> None:
        """Aim the client at ``self.host:self.port``; paho's loop (re)connects there."""
        if self._mqtt5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0 if self._clean else SESSION_EXPIRY_S
            self._client.connect_async(self.host, self.port, keepalive=self._keepalive, clean_start=self._clean,
                                       properties=props)
        else:
            self._client.connect_async(self.host, self.port, keepalive=self._keepalive)

    def stop(self) -> None:
        self.connected.clear()  # an intended disconnect: nothing to report
        self.ready.clear()
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()
        self.ready.clear()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Queue a message (sent now, or after the next reconnect). ``is_published()`` on the result
        turns True when the broker has acknowledged it (QoS 1 PUBACK)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"{self.client_id}: publish to {topic} failed: {mqtt.error_string(info.rc)}")
        return info

    def ack(self, message: Message) -> None:
        """Acknowledge a received QoS 1 message (only needed with ``manual_ack``)."""
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)

    # paho callbacks (network thread)
    def _connected(self, client, _userdata, flags, reason_code, _props=None) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            log.warning("%s: broker refused the connection: %s", self.client_id, reason_code)
            return
        with self._subs_lock:
            self.ready.clear()
            self._pending_subs = {client.subscribe(topic, qos=1)[1] for topic in self._subscriptions}
            if not self._pending_subs:
                self.ready.set()
        self.connects += 1
        self.connected.set()
        if self.connects > 1:
            log.info("%s: reconnected (session %s)", self.client_id,
                     "kept" if flags.session_present else "new")
        if self._on_connect:
            self._on_connect(bool(flags.session_present))

    def _subscribed(self, _client, _userdata, mid, reason_codes, _props=None) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            log.warning("%s: the broker refused a subscription (%s); check the ACL for this client", self.client_id,
                        ", ".join(refused))
        with self._subs_lock:
            self._pending_subs.discard(mid)
            if not self._pending_subs and self.connected.is_set():
                self.ready.set()

    def _disconnected(self, _client, _userdata, _flags, reason_code, _props=None) -> None:
        self.ready.clear()
        if self.connected.is_set():
            log.info("%s: disconnected (%s); reconnecting with backoff", self.client_id, reason_code)
            self.connected.clear()
            self._next_node()
        self.connected.clear()

    def _next_node(self) -> None:
        """Fail over: the next reconnect goes to the cluster's next node (nothing to do with one node)."""
        if len(self._endpoints) < 2:
            return
        self._node = (self._node + 1) % len(self._endpoints)
        self.host, self.port = self._endpoints[self._node]
        self._connect_async()  # from paho's own callback: its loop's next reconnect goes there
        log.info("%s: trying node %s:%d next", self.client_id, self.host, self.port)
