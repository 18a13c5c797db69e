"""What a federated round says on the bus: the global model with its round plan, and a device's update.

``broker.wire`` defines the bytes (header, tensors, encodings); this module defines what the JSON
metadata and the tensor list of a MODEL or UPDATE message mean, once, for the aggregator, the device
client and (later) the firmware. Decoding validates the metadata and raises ``WireError`` with a
reason code, like the wire layer beneath it.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from broker.wire import Encoding, Header, Kind, WireError, decode_tensors, encode_tensors

Weights = list[np.ndarray]


def fleet_id(fleet: str) -> int:
    """The u32 that binds wire messages to a fleet: CRC-32 of its topic name."""
    return zlib.crc32(fleet.encode("utf-8"))


@dataclass(frozen=True)
class UpdateEncoding:
    """How devices encode deltas: ``float32``, ``float16``, ``int8`` or ``topk:FRACTION`` (top-k + int8)."""

    encoding: Encoding = Encoding.FLOAT32
    topk_fraction: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> "UpdateEncoding":
        name, _, arg = spec.partition(":")
        simple = {"float32": Encoding.FLOAT32, "float16": Encoding.FLOAT16, "int8": Encoding.INT8}
        if name in simple and not arg:
            return cls(simple[name])
        if name == "topk":
            try:
                fraction = float(arg)
            except ValueError:
                fraction = -1.0
            if 0 < fraction <= 1:
                return cls(Encoding.TOPK_INT8, fraction)
        raise ValueError(f"encoding {spec!r} not understood; use float32, float16, int8 or topk:FRACTION "
                         "(e.g. topk:0.1)")

    @property
    def lossy(self) -> bool:
        return self.encoding != Encoding.FLOAT32

    def __str__(self) -> str:
        if self.encoding == Encoding.TOPK_INT8:
            return f"topk:{self.topk_fraction:g}"
        return self.encoding.name.lower()


@dataclass(frozen=True)
class RoundPlan:
    """The round configuration sent with the global model."""

    round: int
    selected: tuple[str, ...]
    #: Settings for the device's local trainer (epochs, batch_size, learning_rate, proximal_mu).
    local: dict[str, Any] = field(default_factory=dict)
    encoding: str = "float32"
    #: Devices split their update into CHUNK frames of at most this many bytes (None: one message).
    chunk_size: int | None = None
    #: The last message of a run: no more rounds, devices may stop.
    final: bool = False

    def to_meta(self) -> dict[str, Any]:
        return {"round": self.round, "selected": list(self.selected), "local": self.local,
                "encoding": self.encoding, "chunk_size": self.chunk_size, "final": self.final}


@dataclass(frozen=True)
class GlobalModel:
    plan: RoundPlan
    weights: Weights
    #: SCAFFOLD's server control variate c, same shapes as ``weights``.
    server_control: Weights | None = None


@dataclass(frozen=True)
class LocalUpdate:
    """A device's result for one round: the delta (local minus global weights) and what weights it."""

    delta: Weights
    num_examples: int
    local_steps: int
    control_delta: Weights | None = None
    train_loss: float | None = None


def encode_global(fleet: str, model: GlobalModel) -> bytes:
    tensors = list(model.weights) + list(model.server_control or [])
    meta = {**model.plan.to_meta(), "n_weights": len(model.weights)}
    return encode_tensors(Kind.MODEL, fleet_id(fleet), model.plan.round, 0, tensors, Encoding.FLOAT32, meta)


def decode_global(data: bytes) -> tuple[Header, GlobalModel]:
    msg = decode_tensors(data)
    if msg.header.kind != Kind.MODEL:
        raise WireError("bad_kind", f"expected MODEL, got {msg.header.kind.name}")
    meta = msg.meta
    try:
        n = int(meta["n_weights"])
        plan = RoundPlan(round=int(meta["round"]), selected=tuple(str(d) for d in meta["selected"]),
                         local=dict(meta["local"]), encoding=str(meta["encoding"]),
                         chunk_size=None if meta["chunk_size"] is None else int(meta["chunk_size"]),
                         final=bool(meta["final"]))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # int(inf), float(10**400)
        raise WireError("bad_meta", f"global model metadata incomplete or mistyped ({exc!r})") from exc
    if plan.round != msg.header.round or n not in (len(msg.tensors), len(msg.tensors) // 2) or n < 1:
        raise WireError("bad_meta", "global model metadata disagrees with its header or tensor count")
    weights, control = _split_control(msg.tensors, n)
    return msg.header, GlobalModel(plan, weights, control)


def encode_update(fleet: str, round_: int, device_id: int, update: LocalUpdate, encoding: UpdateEncoding) -> bytes:
    tensors = list(update.delta) + list(update.control_delta or [])
    meta = {"num_examples": int(update.num_examples), "local_steps": int(update.local_steps),
            "n_delta": len(update.delta),
            "train_loss": None if update.train_loss is None else float(update.train_loss)}
    return encode_tensors(Kind.UPDATE, fleet_id(fleet), round_, device_id, tensors, encoding.encoding, meta,
                          topk_fraction=encoding.topk_fraction)


def decode_update(data: bytes) -> tuple[Header, LocalUpdate]:
    msg = decode_tensors(data)
    if msg.header.kind != Kind.UPDATE:
        raise WireError("bad_kind", f"expected UPDATE, got {msg.header.kind.name}")
    meta = msg.meta
    try:
        n, examples, steps = int(meta["n_delta"]), int(meta["num_examples"]), int(meta["local_steps"])
        loss = meta.get("train_loss")
        loss = None if loss is None else float(loss)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # int(inf), float(10**400)
        raise WireError("bad_meta", f"update metadata incomplete or mistyped ({exc!r})") from exc
    if examples <= 0 or steps <= 0 or (loss is not None and not math.isfinite(loss)):
        raise WireError("bad_meta", f"num_examples {examples} and local_steps {steps} must be positive")
    if n < 1 or len(msg.tensors) not in (n, 2 * n):
        raise WireError("bad_meta", f"n_delta {n} does not fit {len(msg.tensors)} tensors")
    delta, control = _split_control(msg.tensors, n)
    return msg.header, LocalUpdate(delta, examples, steps, control, loss)


def _split_control(tensors: Sequence[np.ndarray], n: int) -> tuple[Weights, Weights | None]:
    """The first ``n`` tensors, and SCAFFOLD's control tensors when the message carries them after those."""
    tensors = list(tensors)
    return tensors[:n], (tensors[n:] if len(tensors) == 2 * n else None)


def roundtrip_delta(delta: Sequence[np.ndarray], encoding: UpdateEncoding) -> Weights:
    """What the aggregator will decode from ``delta``: devices keep the difference as error feedback."""
    if not encoding.lossy:
        return [np.asarray(d, np.float32) for d in delta]
    data = encode_tensors(Kind.UPDATE, 0, 0, 0, delta, encoding.encoding, topk_fraction=encoding.topk_fraction)
    return list(decode_tensors(data).tensors)
