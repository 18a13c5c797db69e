"""Simulated devices that run the real secure-aggregation client: one federated round of N devices, each on
its own MQTT connection, multiplexed on asyncio in worker processes (like the scale simulator's devices).

Each device holds a ``SecAggParticipant`` (``edge_runtime.secagg_client``, the code a wearable runs: X25519
adverts, Shamir shares encrypted to its neighbours, ChaCha20 masks, the consistency check) and frames, signs
and publishes what it returns exactly as ``DeviceClient`` does; in ``plain`` mode it publishes a signed
float32 update instead. ``DeviceClient`` itself costs a paho network thread per device, which does not reach
1,000 devices on one machine; this does, with the same protocol objects and the same bytes on the wire.

What differs from a real fleet, and why it does not flatter the measurement:
- the update is a fixed random vector (no training), in both modes alike;
- pure functions of identical inputs are computed once per worker process, not once per device: checking
  the aggregator's signature on, and decoding, one broadcast that every device receives, and the Ed25519
  verification of one device's signature over one survivor list (the consistency check) or over its keys
  (the adverts, which each of its k neighbours checks). In a fleet each
  device does this on its own processor, in parallel; the simulation would otherwise serialise 1,000 copies
  of the same work on two cores. The per-device cost of the check is measured on its own (``consistency``).
Bytes, messages and the aggregator's work are those of the deployed code.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import aiomqtt
import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.fed_messages import LocalUpdate, UpdateEncoding, decode_global, encode_update, fleet_id
from broker.mqtt_link import parse_broker_url
from broker.secagg_messages import MaskedInput, SecAggPlan, decode_secagg, encode_secagg
from broker.signing import sign_message, verify_message
from broker.topics import FleetTopics, parse_topic
from edge_runtime.secagg_client import SecAggParticipant

log = logging.getLogger(__name__)
PARAMETERS = 4757  # the beat classifier's


def device_update(k: int, parameters: int = PARAMETERS) -> np.ndarray:
    """Device ``k``'s update: the same vector in every mode and run (so the exact sum is known)."""
    return np.random.default_rng(k).normal(0, 0.02, parameters).astype(np.float32)


def device_name(k: int) -> str:
    return f"d{k:04d}"


@dataclass(frozen=True)
class SecAggFleetConfig:
    """One round's simulated fleet: device k is ``device_name(k)`` with wire id k + 1.

    ``signing_keys``: each device's raw Ed25519 private key (its public key is registered with the
    aggregator); ``aggregator_key``: the aggregator's raw public key (every global model and protocol
    message must carry its signature); ``dropping``: devices that go silent (disconnect) right after their
    masked input (in plain mode: after their update)."""

    broker_url: str
    fleet: str
    signing_keys: tuple[bytes, ...]
    aggregator_key: bytes
    dropping: frozenset[int] = frozenset()
    workers: int = 2
    parameters: int = PARAMETERS
    connect_rate: float = 200.0
    timeout_s: float = 900.0

    def __post_init__(self) -> None:
        if not self.signing_keys or not 1 <= self.workers <= 16:
            raise ValueError("give at least one device key and 1..16 workers")
        if any(not 0 <= k < len(self.signing_keys) for k in self.dropping):
            raise ValueError("dropping lists a device index outside the fleet")

    @property
    def devices(self) -> int:
        return len(self.signing_keys)

    def share(self, worker: int) -> range:
        base, rest = divmod(self.devices, self.workers)
        start = worker * base + min(worker, rest)
        return range(start, start + base + (1 if worker < rest else 0))


class _MemoKey:
    """An Ed25519 public key whose verdicts are remembered for the worker (see the module docstring)."""

    def __init__(self, key: Ed25519PublicKey, stats: Counter) -> None:
        self._key, self._memo, self._stats = key, {}, stats

    def verify(self, signature: bytes, data: bytes) -> None:
        memo_key = (signature, data)
        if memo_key not in self._memo:
            started = time.process_time()
            try:
                self._key.verify(signature, data)
                self._memo[memo_key] = True
            except InvalidSignature:
                self._memo[memo_key] = False
            self._stats["verify_cpu_us"] += int(1e6 * (time.process_time() - started))
            self._stats["verifications"] += 1
        self._stats["verdicts"] += 1
        if not self._memo[memo_key]:
            raise InvalidSignature()


@dataclass
class _Device:
    k: int
    name: str
    participant: SecAggParticipant
    key: Ed25519PrivateKey
    joined: bool = False
    done: bool = False
    sent: Counter = field(default_factory=Counter)  # kind -> messages
    sent_bytes: Counter = field(default_factory=Counter)


class SecAggWorker:
    """This worker's share of the fleet, one asyncio task and one MQTT connection per device."""

    def __init__(self, cfg: SecAggFleetConfig, index: int) -> None:
        self.cfg, self.index = cfg, index
        self.host, self.port = parse_broker_url(cfg.broker_url)
        self.topics = FleetTopics(cfg.fleet)
        self.fid = fleet_id(cfg.fleet)
        self.aggregator_key = Ed25519PublicKey.from_public_bytes(cfg.aggregator_key)
        self.stats: Counter = Counter()
        keys = [Ed25519PrivateKey.from_private_bytes(raw) for raw in cfg.signing_keys]
        directory = {k + 1: _MemoKey(key.public_key(), self.stats) for k, key in enumerate(keys)}
        self.devices = [_Device(k, device_name(k), SecAggParticipant(k + 1, np.random.default_rng(k), keys[k],
                                                                     directory), keys[k]) for k in cfg.share(index)]
        self._decoded: dict[bytes, tuple] = {}
        self.connected = 0

    async def run(self, ready, stop) -> dict:
        """Connect every device (``ready(count)`` once all are subscribed), run until every device is done or
        ``stop()`` is true, and return the counters."""
        tasks = [asyncio.create_task(self._device(d, i / (self.cfg.connect_rate / self.cfg.workers)))
                 for i, d in enumerate(self.devices)]
        while self.connected < len(self.devices) and not all(t.done() for t in tasks):
            await asyncio.sleep(0.2)
        ready(self.connected)
        deadline = time.monotonic() + self.cfg.timeout_s
        while not all(d.done for d in self.devices) and not stop() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sent, sent_bytes = Counter(), Counter()
        for d in self.devices:
            sent.update(d.sent)
            sent_bytes.update(d.sent_bytes)
        return {"devices": len(self.devices), "done": sum(d.done for d in self.devices), "sent": dict(sent),
                "sent_bytes": dict(sent_bytes), "cpu_seconds": round(time.process_time(), 2), **self.stats}

    async def _device(self, dev: _Device, delay: float) -> None:
        await asyncio.sleep(delay)
        client = aiomqtt.Client(self.host, self.port, identifier=f"pw-{self.cfg.fleet}-{dev.name}",
                                clean_session=True, keepalive=300, timeout=120, max_queued_outgoing_messages=0)
        try:
            async with client:
                await client.subscribe([(t, 1) for t in (self.topics.all_globals(), *self.topics.secagg_for(dev.name))])
                self.connected += 1
                async for message in client.messages:
                    try:
                        outgoing = self._answer(dev, str(message.topic), bytes(message.payload))
                    except Exception:  # one device's failed step must not stop the others
                        self.stats["device_errors"] += 1
                        log.exception("%s: step failed", dev.name)
                        continue
                    for kind, topic, data in outgoing:
                        await client.publish(topic, data, qos=1, timeout=120)
                        dev.sent[kind] += 1
                        dev.sent_bytes[kind] += len(data)
                        if dev.k in self.cfg.dropping and kind in ("MASKED_INPUT", "update"):
                            dev.done = True  # drops out: silent from here on
                    if dev.done:
                        return
        except aiomqtt.MqttError as exc:
            self.stats["mqtt_errors"] += 1
            log.warning("%s: %s", dev.name, exc)

    def _decode(self, payload: bytes, decoder):
        """The aggregator's message, signature checked and decoded once per worker (the module docstring)."""
        hit = self._decoded.get(payload)
        if hit is None:
            if len(self._decoded) > 32:
                self._decoded.clear()
            hit = self._decoded[payload] = decoder(verify_message(payload, self.aggregator_key))
        return hit

    def _answer(self, dev: _Device, topic: str, payload: bytes) -> list[tuple[str, str, bytes]]:
        """What ``dev`` publishes in answer to one message: (kind, topic, signed payload)."""
        if not payload:
            return []  # an empty retained message clears an old round
        kind = parse_topic(topic).kind
        if kind == "global":
            _, model = self._decode(payload, decode_global)
            plan = model.plan
            if plan.final:
                dev.done = True
                return []
            if dev.name not in plan.selected or dev.joined:
                return []
            dev.joined = True
            delta = device_update(dev.k, self.cfg.parameters)
            if not plan.local.get("secagg"):
                data = encode_update(self.cfg.fleet, plan.round, dev.k + 1, LocalUpdate([delta], 100, 10),
                                     UpdateEncoding.parse(plan.encoding))
                return [("update", self.topics.update(plan.round, dev.name), sign_message(data, dev.key))]
            secagg = SecAggPlan.from_dict(plan.local["secagg"])
            out = [dev.participant.begin(plan.round, secagg)]
            out += dev.participant.set_update(plan.round, delta.astype(np.float64))
            return self._frame(dev, out)
        if kind == "secagg":
            header, message = self._decode(payload, decode_secagg)
            if header.fleet_id != self.fid:
                return []
            return self._frame(dev, dev.participant.on_message(header.round, message))
        return []

    def _frame(self, dev: _Device, outgoing: list) -> list[tuple[str, str, bytes]]:
        framed = []
        for round_, session, body in outgoing:
            data = sign_message(encode_secagg(self.fid, round_, session, body), dev.key)
            kind = "MASKED_INPUT" if isinstance(body, MaskedInput) else type(body).__name__
            framed.append((kind, self.topics.update(round_, dev.name), data))
        return framed


def secagg_worker_main(cfg: SecAggFleetConfig, index: int, queue, stop_event) -> None:
    """Process entry point: ("ready", index, connected), then ("final", index, counters) or ("error", ...)."""
    logging.basicConfig(level=logging.WARNING)
    worker = SecAggWorker(cfg, index)
    try:
        final = asyncio.run(worker.run(lambda n: queue.put(("ready", index, n)), stop_event.is_set))
        queue.put(("final", index, final))
    except Exception as exc:  # the coordinator must hear about it rather than wait forever
        log.exception("secagg worker %d failed", index)
        queue.put(("error", index, f"{exc.__class__.__name__}: {exc}"))
