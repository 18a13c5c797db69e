"""One worker process: its share of the fleet's devices, each on its own MQTT connection, all driven by
one asyncio loop (aiomqtt over paho). Alerts and rounds are scheduled per worker (a Poisson process over
the connected devices) rather than per device, so an idle device costs one sleeping task. With an
aggregator (``FleetSimConfig.aggregator_key``) every device also subscribes to the global models, as
``DeviceClient`` does, and answers the rounds that select it (``round_member``)."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import aiomqtt

from broker.mqtt_link import parse_broker_url
from broker.topics import FleetTopics, parse_topic
from broker.wire import WireError
from tools.fleet_sim.config import FleetSimConfig
from tools.fleet_sim.device import SimDevice
from tools.fleet_sim.round_member import RoundMember, device_key

log = logging.getLogger(__name__)
REPORT_EVERY_S = 1.0


@dataclass
class WorkerStats:
    """Counters a worker reports to the coordinator (a snapshot every second, the alert ids at the end)."""

    connected: int = 0
    connects: int = 0
    connect_failures: int = 0
    churn_leaves: int = 0
    messages: Counter = field(default_factory=Counter)  # kind -> messages acknowledged by the broker
    bytes: Counter = field(default_factory=Counter)  # kind -> payload bytes acknowledged
    publish_failures: int = 0
    loop_errors: int = 0  # callbacks that failed in the event loop (e.g. paho asking to watch a closed socket)
    alerts_acked: list[str] = field(default_factory=list)
    updates_acked: Counter = field(default_factory=Counter)  # round -> updates acknowledged
    dropped: Counter = field(default_factory=Counter)  # round -> selected devices that left instead of answering
    declined: Counter = field(default_factory=Counter)  # round -> selected devices that declined (no consent)
    bad_models: int = 0  # global models that failed the signature check or the decode
    slow_subscribes: int = 0  # subscriptions to the global models acknowledged after the timeout

    def snapshot(self) -> dict:
        return {"connected": self.connected, "connects": self.connects, "connect_failures": self.connect_failures,
                "churn_leaves": self.churn_leaves, "messages": dict(self.messages), "bytes": dict(self.bytes),
                "publish_failures": self.publish_failures, "loop_errors": self.loop_errors,
                "alerts_acked": len(self.alerts_acked),
                "updates_acked": {str(k): v for k, v in self.updates_acked.items()},
                "dropped": {str(k): v for k, v in self.dropped.items()},
                "declined": {str(k): v for k, v in self.declined.items()}, "bad_models": self.bad_models,
                "slow_subscribes": self.slow_subscribes}


class _Slot:
    """A device and its live connection (None while it is away)."""

    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self.client: aiomqtt.Client | None = None
        self.pending: list[tuple[str, str, bytes, str]] = []  # (kind, topic, payload, alert id or round)
        self.wake = asyncio.Event()
        self.answered: set[int] = set()  # aggregator rounds this device answered (or left, or declined)
        self.leave_now = False  # selected and dropping out: disconnect at once


class Worker:
    def __init__(self, cfg: FleetSimConfig, index: int) -> None:
        self.cfg, self.index = cfg, index
        self.host, self.port = parse_broker_url(cfg.broker_url)
        self.topics = FleetTopics(cfg.fleet)
        share = cfg.worker_share(index)
        self.share = len(share) / cfg.devices
        self.slots = [_Slot(SimDevice.create(cfg.first_device + i, cfg.seed, cfg.slow_fraction)) for i in share]
        self.rng = random.Random(cfg.seed * 7919 + index)
        self.stats = WorkerStats()
        self.end = 0.0
        self.member = RoundMember(cfg.fleet, cfg.aggregator_key, cfg.seed) if cfg.aggregator_key else None
        self.keys = {s.device.index: device_key(cfg.seed, s.device.index) for s in self.slots} if self.member else {}

    async def run(self, report, stop=lambda: False) -> dict:
        """Run every device until the duration is over (with ``overtime_s``: until ``stop()`` says so, at most
        that much longer); ``report(snapshot)`` is called every second."""
        self.end = time.monotonic() + self.cfg.duration_s + self.cfg.overtime_s
        asyncio.get_running_loop().set_exception_handler(self._loop_error)
        interval = 1.0 / (self.cfg.connect_rate * self.share)  # this worker's share of the connect rate
        tasks = [asyncio.create_task(self._device(s, i * interval)) for i, s in enumerate(self.slots)]
        tasks += [asyncio.create_task(self._alerts()), asyncio.create_task(self._rounds())]
        while time.monotonic() < self.end and not stop():
            report(self.stats.snapshot())
            await asyncio.sleep(REPORT_EVERY_S)
        self.end = min(self.end, time.monotonic())
        for s in self.slots:
            s.wake.set()
        _, late = await asyncio.wait(tasks, timeout=15)  # a device asleep (away, backing off) is not waited for
        for t in late:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        final = self.stats.snapshot()
        final["alert_ids"] = self.stats.alerts_acked
        final["alerts_unsent"] = sum(1 for s in self.slots for p in s.pending if p[0] == "alert")
        return final

    def _loop_error(self, _loop, context: dict) -> None:
        """A failed callback is counted and logged in one line, never a traceback per device. The one seen:
        with churn, paho asks (from its thread-safe callback) to watch a socket that a disconnect has just
        closed; that connection is already gone and the device reconnects on its own."""
        self.stats.loop_errors += 1
        log.warning("worker %d: event-loop callback failed: %s", self.index,
                    context.get("exception") or context.get("message"))

    # ----------------------------------------------------------------- a device's life
    async def _device(self, slot: _Slot, start_delay: float) -> None:
        await asyncio.sleep(start_delay)
        dev, cfg = slot.device, self.cfg
        r = random.Random(cfg.seed * 31 + dev.index)
        backoff = 1.0
        while time.monotonic() < self.end:
            leave_at = (time.monotonic() + r.expovariate(1 / cfg.churn_online_s)) if cfg.churn_online_s else self.end
            will = aiomqtt.Will(self.topics.status(dev.name), dev.offline_payload(cfg.fleet), qos=1, retain=True)
            client = aiomqtt.Client(self.host, self.port, identifier=f"pw-{cfg.fleet}-{dev.name}", will=will,
                                    clean_session=True, keepalive=cfg.keepalive_s, timeout=30,
                                    max_queued_outgoing_messages=0)
            try:
                async with client:
                    self.stats.connects += 1
                    self.stats.connected += 1
                    slot.client = client
                    backoff = 1.0
                    listener = asyncio.create_task(self._listen(slot, client)) if self.member else None
                    try:
                        await self._session(slot, r, min(leave_at, self.end))
                    finally:
                        if listener is not None:
                            listener.cancel()
                        slot.client = None
                        self.stats.connected -= 1
            except aiomqtt.MqttError as exc:
                self.stats.connect_failures += 1
                log.debug("%s: %s; retrying in %.0f s", dev.name, exc, backoff)
                await asyncio.sleep(min(backoff, max(self.end - time.monotonic(), 0)))
                backoff = min(backoff * 2, 30.0)
                continue
            if time.monotonic() < self.end:  # churn: away for a while, the retained status says offline
                self.stats.churn_leaves += 1
                await asyncio.sleep(min(r.expovariate(1 / cfg.churn_offline_s), max(self.end - time.monotonic(), 0)))

    async def _session(self, slot: _Slot, r: random.Random, until: float) -> None:
        dev, cfg = slot.device, self.cfg
        last = time.monotonic()
        next_status = last  # a device announces itself on connect, then every status_every_s (jittered)
        while True:
            now = time.monotonic()
            if now >= next_status:
                dev.advance(now - last, r)
                last = now
                payload = dev.status_payload(cfg.fleet)
                if not await self._publish(slot, "status", self.topics.status(dev.name), payload, retain=True):
                    return  # the connection broke: reconnect
                next_status = now + cfg.status_every_s * r.uniform(0.9, 1.1)
            while slot.pending and slot.client is not None:
                kind, topic, payload, tag = slot.pending[0]
                if not await self._publish(slot, kind, topic, payload, tag=tag):
                    return  # the connection broke: the message stays queued for the next session
                slot.pending.pop(0)
            if now >= until or now >= self.end or slot.leave_now:
                slot.leave_now = False
                if now < self.end:
                    await self._publish(slot, "status", self.topics.status(dev.name),
                                        dev.status_payload(cfg.fleet, "offline"), retain=True)
                return
            slot.wake.clear()
            try:
                await asyncio.wait_for(slot.wake.wait(), timeout=max(min(next_status, until) - now, 0.0))
            except asyncio.TimeoutError:
                pass

    # ----------------------------------------------------------------- aggregator rounds
    async def _listen(self, slot: _Slot, client: aiomqtt.Client) -> None:
        """Subscribe to the global models (retained: a device that connects late still gets its round's) and
        answer each one."""
        try:
            await client.subscribe(self.topics.all_globals(), qos=1, timeout=self.cfg.keepalive_s)
        except aiomqtt.MqttError:
            # a SUBACK later than the timeout (a starved broker): the broker has the subscription all the same
            # (it answers in order on this connection), so the device listens rather than going deaf
            self.stats.slow_subscribes += 1
        try:
            async for message in client.messages:
                if message.payload and parse_topic(str(message.topic)).kind == "global":
                    try:
                        self._on_global(slot, bytes(message.payload))
                    except Exception as exc:  # one device's failed answer must not silence it for good
                        self.stats.loop_errors += 1
                        log.warning("%s: answering a round failed: %s", slot.device.name, exc)
        except aiomqtt.MqttError:
            return  # the connection broke: the session ends and the device reconnects

    def _on_global(self, slot: _Slot, payload: bytes) -> None:
        """Answer a round that selects this device, once: an update, a decline, or (``dropout``) leave."""
        try:
            seen = self.member.model(payload)
        except (WireError, ValueError) as exc:
            self.stats.bad_models += 1
            log.warning("%s: ignoring a bad global model: %s", slot.device.name, exc)
            return
        plan, dev = seen.model.plan, slot.device
        if plan.final or dev.name not in seen.selected or plan.round in slot.answered:
            return
        slot.answered.add(plan.round)
        if random.Random(f"{self.cfg.seed}:{plan.round}:{dev.index}").random() < self.cfg.dropout:
            self.stats.dropped[plan.round] += 1
            slot.leave_now = True
        elif not dev.consent:
            self.stats.declined[plan.round] += 1
            slot.pending.append(("status", self.topics.status(dev.name), dev.status_payload(
                self.cfg.fleet, declined_round=plan.round, reason="no training consent"), ""))
        else:
            dev.spend_round()
            for frame in self.member.update_frames(seen.model, dev.index, dev.device_id, self.keys[dev.index]):
                slot.pending.append(("update", self.topics.update(plan.round, dev.name), frame, str(plan.round)))
        slot.wake.set()

    async def _publish(self, slot: _Slot, kind: str, topic: str, payload: bytes, retain: bool = False,
                       tag: str = "") -> bool:
        """QoS 1; counted only once the broker acknowledged it (PUBACK)."""
        delay = slot.device.upload_delay_s(len(payload), self.cfg.slow_link_bytes_per_s)
        if delay:
            await asyncio.sleep(delay)
        client = slot.client
        if client is None:
            return False
        try:
            # as long as the keepalive: paho's own client has no publish timeout, and a broker slow to
            # acknowledge (a starved machine) must not turn into a reconnect storm of the whole fleet
            await client.publish(topic, payload, qos=1, retain=retain, timeout=self.cfg.keepalive_s)
        except aiomqtt.MqttError as exc:
            self.stats.publish_failures += 1
            log.debug("%s: %s not published: %s", slot.device.name, kind, exc)
            return False
        self.stats.messages[kind] += 1
        self.stats.bytes[kind] += len(payload)
        if kind == "alert":
            self.stats.alerts_acked.append(tag)
        elif kind == "update":
            self.stats.updates_acked[int(tag)] += 1
        return True

    # ----------------------------------------------------------------- fleet-wide events
    def _connected_slots(self) -> list[_Slot]:
        return [s for s in self.slots if s.client is not None]

    async def _alerts(self) -> None:
        """Poisson arrivals at this worker's share of the fleet's alert rate, each on a connected device.
        Arrival times are kept on a schedule, so an event loop that wakes late (a starved worker of 2,500
        devices can take seconds per turn) makes up every arrival it overslept instead of lowering the rate."""
        rate = self.cfg.alerts_per_second * self.share
        if rate <= 0:
            return
        due = time.monotonic() + self.rng.expovariate(rate)
        while True:
            await asyncio.sleep(max(due - time.monotonic(), 0.0))
            while due <= time.monotonic():
                if due >= self.end:
                    return
                due += self.rng.expovariate(rate)
                self._alert()

    def _alert(self) -> None:
        online = self._connected_slots()
        if not online:
            return
        slot = self.rng.choice(online)
        alert = slot.device.next_alert(self.rng, dt.datetime.now(dt.timezone.utc))
        payload = slot.device.alert_payload(self.cfg.fleet, alert)
        slot.pending.append(("alert", self.topics.alert(slot.device.name), payload, alert["alert_id"]))
        slot.wake.set()

    async def _rounds(self) -> None:
        """Every ``round_every_s``: this worker's share of ``round_devices`` send one int8 head update."""
        cfg = self.cfg
        if cfg.round_every_s <= 0 or cfg.round_devices <= 0:
            return
        round_ = 0
        while True:
            await asyncio.sleep(cfg.round_every_s)
            if time.monotonic() >= self.end:
                return
            round_ += 1
            online = self._connected_slots()
            chosen = self.rng.sample(online, min(len(online), round(cfg.round_devices * self.share)))
            for slot in chosen:
                payload = slot.device.update_payload(cfg.fleet, round_, cfg.update_shapes, cfg.seed)
                slot.pending.append(("update", self.topics.update(round_, slot.device.name), payload, str(round_)))
                slot.wake.set()


def worker_main(cfg: FleetSimConfig, index: int, queue, stop_event=None) -> None:
    """Process entry point: snapshots go to ``queue`` as ("snapshot", index, dict), then ("final", ...);
    ``stop_event`` (with ``overtime_s``) ends the run early."""
    logging.basicConfig(level=logging.WARNING)
    worker = Worker(cfg, index)
    stop = stop_event.is_set if stop_event is not None else (lambda: False)
    try:
        final = asyncio.run(worker.run(lambda snap: queue.put(("snapshot", index, snap)), stop))
        queue.put(("final", index, final))
    except Exception as exc:  # the coordinator must hear about it rather than wait forever
        log.exception("worker %d failed", index)
        queue.put(("error", index, f"{exc.__class__.__name__}: {exc}"))
