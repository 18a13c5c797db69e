"""Aggregator workers for the strategies that need every update: workers screen, the coordinator aggregates.

The coordinate-wise median, the trimmed mean, Krum / Multi-Krum and norm bounding to the round's median norm
cannot be computed from sums (``partial_sums.INDIVIDUAL``). With workers they still share the expensive part
of an update, which is the receive path: chunk reassembly, the Ed25519 signature (~140 µs), the wire decode
(~170 µs), the sender and engine screens and the update log with its batched fsync. A worker in this mode
(``ForwardAccepted``, its service's round mode) forwards each update it accepted to the coordinator, already
decoded and not re-signed, as int8 values and one scale per tensor; the coordinator (``ForwardingWorkers``)
rebuilds the float32 delta with the same product the wire decoder uses (``q.astype(float32) * scale``), so the
tensors are bit for bit what the worker decoded, runs the engine's screen on them once more (the round, a
duplicate delivered to two workers) and, at the close, the strategy on the individual updates, which the
service takes in device order (as one aggregator does): the result equals one aggregator's on the same
updates. The price: the coordinator holds every accepted update of the round (O(n) memory, ~4.8 KB per int8
update of the 4,757-parameter head) and runs the robust rule alone, as one aggregator would.

Forward frame (``forward/W``, a batch every 0.1 s, ``aggregator_workers.PROGRESS_EVERY_S``): u32 count, then per update: u16 name
length, the name, u32 round, u32 examples, u32 local steps, f64 train loss (NaN: none), u8 delta tensors,
u8 control flag, then per tensor u8 kind (0: int8 + f32 scale, 1: float32), f32 scale, u32 size and the values.
A tensor that is not exactly q·scale for an int8 q (a float32 or float16 fleet) travels as float32.
Closing: the coordinator asks ``close/R``; a worker flushes its forwards, seals the round and answers
``partial/R/W`` with the devices it accepted in R; the coordinator asks ``fetch/R`` for any it has not
received (a worker rereads them from its log) until it has them all.
"""
from __future__ import annotations

import json
import logging
import math
import struct
import time
from typing import Any, Sequence

import numpy as np

from broker.aggregation_topics import agg_topic
from broker.topics import TopicMatch
from training.federated.aggregator import Aggregator, PlainUpdates
from training.federated.round_engine import Rejected
from training.federated.strategies import ClientUpdate, Weights
from training.federated.worker_coordinator import WorkerCoordinator

log = logging.getLogger(__name__)

_COUNT = struct.Struct("<I")
_NAME = struct.Struct("<H")
_FIXED = struct.Struct("<IIIdBB")
_TENSOR = struct.Struct("<BfI")
INT8, FLOAT32 = 0, 1


def as_int8(values: np.ndarray) -> tuple[np.ndarray, np.float32] | None:
    """(q, scale) with ``q.astype(float32) * scale`` bit-identical to ``values`` (what the wire's int8 decoding
    produced), or None. The scale is max|values| / 127 up to two float32 steps: the peak was 127·scale."""
    flat = np.ascontiguousarray(values, np.float32).ravel()
    peak = float(np.max(np.abs(flat))) if flat.size else 0.0
    up = down = np.float32(peak / 127.0)
    candidates = [up]
    for _ in range(2):
        up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(0))
        candidates += [up, down]
    bits = flat.view(np.uint32)
    for scale in candidates:
        q = np.zeros(flat.size, np.float32) if scale == 0 else np.rint(flat / scale)
        if q.size and float(np.max(np.abs(q))) > 127:
            continue
        q8 = q.astype(np.int8)
        if np.array_equal((q8.astype(np.float32) * np.float32(scale)).view(np.uint32), bits):
            return q8, np.float32(scale)
    return None


def int8_parts(tensors: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.float32] | None]:
    """``as_int8`` of every tensor of an update, in one vectorized pass for the common case (the scale is
    max|values| / 127 exactly); only a tensor that does not fit that way is searched alone."""
    flats = [np.ascontiguousarray(t, np.float32).ravel() for t in tensors]
    sizes = np.array([f.size for f in flats], np.int64)
    if not len(flats) or not sizes.all():
        return [as_int8(f) for f in flats]
    flat = np.concatenate(flats)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    scales = (np.maximum.reduceat(np.abs(flat), starts).astype(np.float64) / 127.0).astype(np.float32)
    each = np.repeat(scales, sizes)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(each == 0, np.float32(0), np.rint(flat / each))
    fits = np.abs(q) <= 127
    q8 = np.where(fits, q, 0).astype(np.int8)
    fits &= (q8.astype(np.float32) * each).view(np.uint32) == flat.view(np.uint32)
    whole = np.logical_and.reduceat(fits, starts)
    return [(q8[a:a + n], scales[i]) if whole[i] else as_int8(flats[i])
            for i, (a, n) in enumerate(zip(starts, sizes))]


def encode_forwards(updates: Sequence[tuple[int, ClientUpdate]]) -> bytes:
    """A batch of (round, update) as decoded from the devices' messages (weights before any late down-weighting)."""
    out = [_COUNT.pack(len(updates))]
    for round_, u in updates:
        name = u.device.encode("utf-8")
        loss = u.meta.get("train_loss")
        out.append(_NAME.pack(len(name)) + name + _FIXED.pack(
            round_, u.num_examples, u.local_steps, math.nan if loss is None else loss, len(u.delta),
            u.control_delta is not None))
        tensors = list(u.delta) + list(u.control_delta or [])
        for tensor, packed in zip(tensors, int8_parts(tensors)):
            if packed is not None:
                q, scale = packed
                out.append(_TENSOR.pack(INT8, scale, q.size) + q.tobytes())
            else:
                flat = np.ascontiguousarray(tensor, "<f4").ravel()
                out.append(_TENSOR.pack(FLOAT32, 0.0, flat.size) + flat.tobytes())
    return b"".join(out)


def decode_forwards(data: bytes, like: Weights) -> list[tuple[int, ClientUpdate]]:
    """A forward batch back to (round, update) with tensors shaped like the model; ValueError if malformed."""
    try:
        (count,), pos, out = _COUNT.unpack_from(data, 0), _COUNT.size, []
        for _ in range(count):
            (n,) = _NAME.unpack_from(data, pos)
            device = data[pos + _NAME.size:pos + _NAME.size + n].decode("utf-8")
            pos += _NAME.size + n
            round_, examples, steps, loss, n_delta, control = _FIXED.unpack_from(data, pos)
            pos += _FIXED.size
            if n_delta != len(like):
                raise ValueError(f"{device}: {n_delta} tensors for a model of {len(like)}")
            tensors = []
            for w in list(like) * (2 if control else 1):
                kind, scale, size = _TENSOR.unpack_from(data, pos)
                pos += _TENSOR.size
                if size != w.size or kind not in (INT8, FLOAT32):
                    raise ValueError(f"{device}: a tensor of {size} values (kind {kind}) for one of {w.size}")
                width = 1 if kind == INT8 else 4
                raw = data[pos:pos + size * width]
                if len(raw) != size * width:
                    raise ValueError("forward batch truncated")
                pos += size * width
                flat = (np.frombuffer(raw, np.int8).astype(np.float32) * np.float32(scale) if kind == INT8
                        else np.frombuffer(raw, "<f4").astype(np.float32))
                tensors.append(flat.reshape(w.shape))
            out.append((round_, ClientUpdate(device, tensors[:len(like)], examples, steps,
                                             tensors[len(like):] or None,
                                             {"train_loss": None if math.isnan(loss) else loss})))
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"not a forward batch ({exc})") from exc
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} bytes after the last forwarded update")
    return out


class ForwardAccepted(PlainUpdates):
    """A worker's round mode: every update is screened and logged as by one aggregator; an accepted one waits in
    ``outbox`` until the worker forwards it, and the worker's engine keeps only its weight and metadata."""

    def __init__(self) -> None:
        self.outbox: list[tuple[int, ClientUpdate]] = []

    def take(self, service: Aggregator, topic: TopicMatch, data: bytes) -> tuple[int, ClientUpdate]:
        round_, update = super().take(service, topic, data)
        kept = service.engine.accepted[update.device]
        service.engine.accepted[update.device] = ClientUpdate(update.device, [], kept.num_examples,
                                                              kept.local_steps, None, kept.meta)
        self.outbox.append((round_, update))
        return round_, update

    def flush(self) -> bytes | None:
        """The waiting updates as one forward batch (None: nothing waits)."""
        if not self.outbox:
            return None
        batch, self.outbox = encode_forwards(self.outbox), []
        return batch


class ForwardingWorkers(WorkerCoordinator):
    """The coordinator's round mode for strategies that need every update: the workers forward what they
    accepted, the engine holds the individual updates, the strategy runs on them at the close."""

    def __init__(self, workers: int, answer_timeout_s: float = 30.0) -> None:
        super().__init__(workers, answer_timeout_s)
        #: Devices whose forward of the current round arrived (accepted or refused here), per worker.
        self._seen: dict[int, set[str]] = {}

    def note(self, service: Aggregator, kind: str, worker: int, payload: bytes) -> None:
        if kind != "forward":
            return
        try:
            forwarded = decode_forwards(payload, service.weights)
        except ValueError as exc:
            log.warning("round %d: worker %d's forward batch ignored (%s)", service.round, worker, exc)
            return
        for round_, update in forwarded:
            self._seen.setdefault(worker, set()).add(update.device)
            try:
                service.engine.accept(update.device, round_, update)
            except Rejected as rej:  # a worker's replay after a restart, a fetch answered twice: not counted
                if rej.reason != "duplicate":
                    service.engine.reject(rej.reason)
                    log.warning("round %d: forwarded update of %s refused (%s): %s", service.round, update.device,
                                rej.reason, rej.detail)

    def close(self, service: Aggregator) -> tuple[list[ClientUpdate] | None, dict[str, Any]]:
        """Every worker's list of the round's accepted devices, then each of their updates (fetched from the
        worker's log if its forward was lost); the service hands them to the strategy in device order."""
        self._ensure_link(service)
        self._drain(service)
        answers = self._collect(service, "partial", "close", json.dumps({"round": service.round}).encode())
        listed = {w: json.loads(a)["devices"] for w, a in answers.items()}
        while missing := sorted(d for w, devices in listed.items() for d in devices
                                if d not in self._seen.get(w, ()) and d not in service.engine.accepted):
            log.warning("round %d: %d forwarded update(s) not received (%s...); fetching them", service.round,
                        len(missing), missing[:3])
            self._link.publish(agg_topic(service.cfg.fleet, "fetch", service.round), json.dumps({"devices": missing}).encode(), qos=1)
            self._wait_for(service, set(missing))
        self.per_worker = {w: len(devices) for w, devices in listed.items()}
        self._seen = {}
        return None, {"workers": {str(w): c for w, c in self.per_worker.items()}}

    def _wait_for(self, service: Aggregator, devices: set[str]) -> None:
        """Up to the answer timeout, until every one of ``devices`` arrived."""
        deadline = time.monotonic() + self.answer_timeout_s
        while time.monotonic() < deadline:
            seen = set().union(*self._seen.values()) if self._seen else set()
            if devices <= seen | set(service.engine.accepted):
                return
            self.wait(service, 0.05)
