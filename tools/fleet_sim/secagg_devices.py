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

Each device's own CPU is measured per step (``device_cpu``): the thread CPU time of its answer to each message
(decoding, checks, cryptography, framing and signing), plus, where the worker's shared verdicts spared it work,
the CPU that work took when it was done (so every device is charged what it would pay on its own processor).
The device's MQTT client and socket work is not in it (the same per message in both modes). This is what the
round's critical path (``tools.secagg_overhead``) takes the slowest device's time from: in a fleet the devices
run in parallel, in the simulation they queue for two cores.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import aiomqtt
import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from broker.fed_messages import (
    LocalUpdate,
    UpdateEncoding,
    decode_global,
    encode_update,
    fleet_id,
)
from broker.mqtt_link import parse_broker_url
from broker.secagg_messages import MaskedInput, SecAggPlan, decode_secagg, encode_secagg
from broker.signing import is_signed, sign_message, verify_message
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
    message must carry its signature, except what ``SecAggParticipant.authenticates``); ``dropping``: devices that go silent (disconnect) right after their
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


@dataclass
class _Charge:
    """CPU seconds a device is charged for shared work it was spared (added to its measured answer time)."""

    seconds: float = 0.0


class _MemoKey:
    """An Ed25519 public key whose verdicts are remembered for the worker (see the module docstring)."""

    def __init__(self, key: Ed25519PublicKey, stats: Counter, charge: _Charge) -> None:
        self._key, self._memo, self._stats, self._charge = key, {}, stats, charge

    def verify(self, signature: bytes, data: bytes) -> None:
        memo_key = (signature, data)
        hit = self._memo.get(memo_key)
        if hit is None:
            started = time.thread_time()
            try:
                self._key.verify(signature, data)
                valid = True
            except InvalidSignature:
                valid = False
            cost = time.thread_time() - started
            hit = self._memo[memo_key] = (valid, cost)
            self._stats["verify_cpu_us"] += int(1e6 * cost)
            self._stats["verifications"] += 1
        else:
            self._charge.seconds += hit[1]  # what this device would have spent verifying it itself
        self._stats["verdicts"] += 1
        if not hit[0]:
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
    #: This device's own CPU seconds per step (the message it answered: global, AdvertList, SharesFor, ...).
    cpu: Counter = field(default_factory=Counter)


class SecAggWorker:
    """This worker's share of the fleet, one asyncio task and one MQTT connection per device."""

    def __init__(self, cfg: SecAggFleetConfig, index: int) -> None:
        self.cfg, self.index = cfg, index
        self.host, self.port = parse_broker_url(cfg.broker_url)
        self.topics = FleetTopics(cfg.fleet)
        self.fid = fleet_id(cfg.fleet)
        self.aggregator_key = Ed25519PublicKey.from_public_bytes(cfg.aggregator_key)
        self.stats: Counter = Counter()
        self.charge = _Charge()
        keys = [Ed25519PrivateKey.from_private_bytes(raw) for raw in cfg.signing_keys]
        directory = {k + 1: _MemoKey(key.public_key(), self.stats, self.charge) for k, key in enumerate(keys)}
        self.devices = [_Device(k, device_name(k), SecAggParticipant(k + 1, np.random.default_rng(k), keys[k],
                                                                     directory), keys[k]) for k in cfg.share(index)]
        self._decoded: dict[bytes, tuple] = {}  # payload -> (decoded, CPU seconds the decoding took)
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
                "sent_bytes": dict(sent_bytes), "cpu_seconds": round(time.process_time(), 2),
                "device_cpu": device_cpu_summary([d.cpu for d in self.devices]), **self.stats}

    async def _device(self, dev: _Device, delay: float) -> None:
        await asyncio.sleep(delay)
        client = aiomqtt.Client(self.host, self.port, identifier=f"pw-{self.cfg.fleet}-{dev.name}",
                                clean_session=True, keepalive=300, timeout=120, max_queued_outgoing_messages=0)
        try:
            async with client:
                await client.subscribe([(t, 1) for t in (self.topics.all_globals(), *self.topics.secagg_for(dev.name))])
                self.connected += 1
                async for message in client.messages:
                    started, self.charge.seconds = time.thread_time(), 0.0
                    try:
                        step, outgoing = self._answer(dev, str(message.topic), bytes(message.payload))
                    except Exception:  # one device's failed step must not stop the others
                        self.stats["device_errors"] += 1
                        log.exception("%s: step failed", dev.name)
                        continue
                    if step:
                        dev.cpu[step] += time.thread_time() - started + self.charge.seconds
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
        """The aggregator's message, signature checked and decoded once per worker (the module docstring); a
        device served from the memo is charged the CPU the decoding took."""
        hit = self._decoded.get(payload)
        if hit is None:
            if len(self._decoded) > 32:
                self._decoded.clear()
            started = time.thread_time()
            decoded = decoder(verify_message(payload, self.aggregator_key))
            hit = self._decoded[payload] = (decoded, time.thread_time() - started)
        else:
            self.charge.seconds += hit[1]
        return hit[0]

    def _answer(self, dev: _Device, topic: str, payload: bytes) -> tuple[str, list[tuple[str, str, bytes]]]:
        """The step (what ``dev`` answers: "global", "final" or the aggregator message's type; "" for nothing) and what
        it publishes in answer: (kind, topic, signed payload)."""
        if not payload:
            return "", []  # an empty retained message clears an old round
        kind = parse_topic(topic).kind
        if kind == "global":
            out = self._answer_global(dev, payload)
            return ("final" if dev.done else "global"), out  # "final": the closing plan, after the round
        if kind == "secagg":
            if is_signed(payload):
                header, message = self._decode(payload, decode_secagg)
            else:  # as DeviceClient: only what the device authenticates end to end comes unsigned
                header, message = decode_secagg(payload)
                if not dev.participant.authenticates(header.round, message):
                    self.stats["unsigned_refused"] += 1
                    return "", []
            if header.fleet_id != self.fid:
                return "", []
            return type(message.payload).__name__, self._frame(dev, dev.participant.on_message(header.round, message))
        return "", []

    def _answer_global(self, dev: _Device, payload: bytes) -> list[tuple[str, str, bytes]]:
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

    def _frame(self, dev: _Device, outgoing: list) -> list[tuple[str, str, bytes]]:
        framed = []
        for round_, session, body in outgoing:
            data = sign_message(encode_secagg(self.fid, round_, session, body), dev.key)
            kind = "MASKED_INPUT" if isinstance(body, MaskedInput) else type(body).__name__
            framed.append((kind, self.topics.update(round_, dev.name), data))
        return framed


def device_cpu_summary(per_device: list[Counter]) -> dict[str, dict[str, float]]:
    """Per step: how many devices answered it, the slowest one's CPU seconds, the 99th percentile's (how far
    the slowest stands out), and their total."""
    out = {}
    for step in sorted({step for cpu in per_device for step in cpu}):
        times = sorted(cpu[step] for cpu in per_device if step in cpu)
        out[step] = {"devices": len(times), "max_s": times[-1], "p99_s": times[int(0.99 * (len(times) - 1))],
                     "sum_s": sum(times)}
    return out


def merge_device_cpu(summaries: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The workers' ``device_cpu_summary`` rows as one fleet's (the slowest device of all, the total of all)."""
    merged: dict[str, dict[str, float]] = {}
    for summary in summaries:
        for step, row in summary.items():
            m = merged.setdefault(step, {"devices": 0, "max_s": 0.0, "p99_s": 0.0, "sum_s": 0.0})
            m["devices"] += row["devices"]
            m["max_s"], m["sum_s"] = max(m["max_s"], row["max_s"]), m["sum_s"] + row["sum_s"]
            m["p99_s"] = max(m["p99_s"], row.get("p99_s", 0.0))  # the workers' worst (a bound, not a pooled p99)
    return {step: {"devices": m["devices"], "max_s": round(m["max_s"], 5), "p99_s": round(m["p99_s"], 5),
                   "sum_s": round(m["sum_s"], 3)} for step, m in merged.items()}


def secagg_worker_main(cfg: SecAggFleetConfig, index: int, queue, stop_event) -> None:
    """Process entry point: ("ready", index, connected), then ("final", index, counters) or ("error", ...)."""
    logging.basicConfig(level=logging.WARNING)
    worker = SecAggWorker(cfg, index)
    # the devices' long-lived state out of the cyclic collector's way: with hundreds of devices in one heap, a
    # full collection would otherwise be charged to whichever device's step triggered it (a device has its own)
    gc.freeze()
    try:
        final = asyncio.run(worker.run(lambda n: queue.put(("ready", index, n)), stop_event.is_set))
        queue.put(("final", index, final))
    except Exception as exc:  # the coordinator must hear about it rather than wait forever
        log.exception("secagg worker %d failed", index)
        queue.put(("error", index, f"{exc.__class__.__name__}: {exc}"))
