"""pulsewire wire format, version 1: the single definition of the bytes on the bus.

Every message is a 28-byte little-endian header followed by a body::

    offset size field
         0    2 magic        b"PW"
         2    1 version      1
         3    1 kind         Kind (MODEL, UPDATE, ALERT, STATUS, CHUNK, SECAGG)
         4    4 fleet_id     u32, binds a message to its fleet (no replay across fleets)
         8    4 round        u32 federated round (0 where it does not apply)
        12    4 device_id    u32 (0 = the aggregator)
        16    1 encoding     Encoding of tensor values
        17    1 flags        bit 0: signed (broker.signing: Ed25519 signature ends the body); others 0
        18    2 n_tensors    u16
        20    4 body_len     u32 bytes after the header
        24    4 crc32        zlib CRC-32 of header (this field zeroed) + body

Tensor body (MODEL, UPDATE): ``u16 meta_len``, ``meta_len`` bytes of UTF-8 JSON object (round config,
sample counts...), then the tensor table (per tensor: ``u8 ndim`` and ``ndim`` x ``u32`` dims), then the
values of each tensor in order:

- FLOAT32: ``f32`` x size;  FLOAT16: ``f16`` x size
- INT8: ``f32 scale`` then ``i8`` x size; value = scale * q (symmetric, scale = max|x| / 127)
- TOPK_INT8: ``f32 scale``, ``u32 k``, a bitmap of ``ceil(size / 8)`` bytes (bit ``i % 8`` of byte
  ``i // 8`` set when flat entry ``i`` is kept; padding bits 0), then ``k`` x ``i8`` in index order;
  entries not kept are 0. Sparse deltas: at 10 % kept, 0.225 bytes per parameter instead of 4

CHUNK body: ``u32 message_id``, ``u16 index``, ``u16 count``, then a fragment of a complete encoded message.
Decoding never trusts its input: every violation raises ``WireError`` with a ``reason`` to count by.
"""
from __future__ import annotations

import enum
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

MAGIC = b"PW"
VERSION = 1
HEADER = struct.Struct("<2sBBIIIBBHII")
CHUNK_HEADER = struct.Struct("<IHH")
#: Refuse anything larger before allocating: a 4 GB body_len must not cost 4 GB.
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_TENSORS = 1024
MAX_NDIM = 8


class Kind(enum.IntEnum):
    MODEL = 1
    UPDATE = 2
    ALERT = 3  # reserved: edge-runtime issue
    STATUS = 4  # reserved: edge-runtime issue
    CHUNK = 5
    SECAGG = 6  # secure-aggregation steps; body layouts in broker.secagg_messages


class Encoding(enum.IntEnum):
    FLOAT32 = 0
    FLOAT16 = 1
    INT8 = 2
    TOPK_INT8 = 3


TENSOR_KINDS = (Kind.MODEL, Kind.UPDATE)


class WireError(ValueError):
    """Undecodable or invalid bytes. ``reason`` is a short stable code for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Header:
    kind: Kind
    fleet_id: int
    round: int
    device_id: int
    encoding: Encoding = Encoding.FLOAT32
    n_tensors: int = 0


@dataclass(frozen=True)
class TensorMessage:
    """A MODEL (global weights) or UPDATE (a device's delta) with its JSON metadata."""

    header: Header
    tensors: tuple[np.ndarray, ...]  # float32, decoded
    meta: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- encoding


def _encode_values(t: np.ndarray, encoding: Encoding, topk_fraction: float) -> bytes:
    flat = np.ascontiguousarray(t, dtype=np.float32).ravel()
    if encoding == Encoding.FLOAT32:
        return flat.astype("<f4").tobytes()
    if encoding == Encoding.FLOAT16:
        return flat.astype("<f2").tobytes()
    if encoding == Encoding.INT8:
        scale = _int8_scale(flat)
        return struct.pack("<f", scale) + _to_int8(flat, scale).tobytes()
    if encoding == Encoding.TOPK_INT8:
        k = max(1, int(np.ceil(topk_fraction * flat.size))) if flat.size else 0
        idx = np.sort(np.argpartition(-np.abs(flat), k - 1)[:k]) if k else np.zeros(0, np.int64)
        values = flat[idx]
        scale = _int8_scale(values)
        mask = np.zeros(flat.size, bool)
        mask[idx] = True
        return struct.pack("<fI", scale, k) + np.packbits(mask, bitorder="little").tobytes() + \
            _to_int8(values, scale).tobytes()
    raise WireError("bad_encoding", f"unknown encoding {encoding!r}")


def _int8_scale(x: np.ndarray) -> float:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return float(np.float32(peak / 127.0))


def _to_int8(x: np.ndarray, scale: float) -> np.ndarray:
    if scale == 0.0:
        return np.zeros(x.size, np.int8)
    return np.clip(np.round(x / np.float32(scale)), -127, 127).astype(np.int8)


def encode_tensors(kind: Kind, fleet_id: int, round_: int, device_id: int, tensors: Sequence[np.ndarray],
                   encoding: Encoding = Encoding.FLOAT32, meta: dict[str, Any] | None = None,
                   topk_fraction: float = 0.1) -> bytes:
    """Bytes of a MODEL or UPDATE message. Non-finite values are refused here, not on the far side."""
    if kind not in TENSOR_KINDS:
        raise ValueError(f"{kind!r} does not carry tensors")
    if not 0 < topk_fraction <= 1:
        raise ValueError(f"topk_fraction must be in (0, 1], got {topk_fraction}")
    arrays = [np.asarray(t, dtype=np.float32) for t in tensors]
    if len(arrays) > MAX_TENSORS:
        raise ValueError(f"at most {MAX_TENSORS} tensors per message, got {len(arrays)}")
    for i, a in enumerate(arrays):
        if a.ndim > MAX_NDIM:
            raise ValueError(f"tensor {i} has {a.ndim} dims; at most {MAX_NDIM}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"tensor {i} holds NaN or Inf; refusing to send it")
    meta_bytes = json.dumps(meta or {}, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    if len(meta_bytes) > 0xFFFF:
        raise ValueError(f"message metadata is {len(meta_bytes):,} bytes; the wire format holds at most 65,535 "
                         "(a round plan naming more than about 5,000 selected devices does not fit: select fewer "
                         "devices per round)")
    parts = [struct.pack("<H", len(meta_bytes)), meta_bytes]
    for a in arrays:
        parts.append(struct.pack(f"<B{a.ndim}I", a.ndim, *a.shape))
    parts.extend(_encode_values(a, Encoding(encoding), topk_fraction) for a in arrays)
    header = Header(Kind(kind), fleet_id, round_, device_id, Encoding(encoding), len(arrays))
    return frame_message(header, b"".join(parts))


def frame_message(h: Header, body: bytes) -> bytes:
    """Header (with CRC) + body: the framing every kind shares."""
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}; use a coarser encoding")
    raw = HEADER.pack(MAGIC, VERSION, h.kind, h.fleet_id, h.round, h.device_id, h.encoding, 0,
                      h.n_tensors, len(body), 0)
    crc = zlib.crc32(raw + body)
    return raw[:-4] + struct.pack("<I", crc) + body


# ----------------------------------------------------------------------------------------- decoding


FLAG_SIGNED = 0x01


def decode_header(data: bytes, allow_signed: bool = False) -> tuple[Header, bytes]:
    """Header and body of one complete message; checks magic, version, kind, length and CRC."""
    if len(data) < HEADER.size:
        raise WireError("truncated", f"{len(data)} bytes, a header alone is {HEADER.size}")
    magic, version, kind, fleet, rnd, dev, enc, flags, n_tensors, body_len, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError("bad_magic", f"starts with {magic!r}, not {MAGIC!r}")
    if version != VERSION:
        raise WireError("bad_version", f"version {version}; this side speaks {VERSION}")
    if kind not in Kind._value2member_map_:
        raise WireError("bad_kind", f"unknown message kind {kind}")
    if enc not in Encoding._value2member_map_:
        raise WireError("bad_encoding", f"unknown encoding {enc}")
    if flags and not (allow_signed and flags == FLAG_SIGNED):
        reason = "signed" if flags == FLAG_SIGNED else "bad_flags"
        raise WireError(reason, f"flags {flags:#04x}" + (": verify the signature first" if reason == "signed" else ""))
    if body_len > MAX_BODY_BYTES:
        raise WireError("oversized", f"body of {body_len} bytes exceeds {MAX_BODY_BYTES}")
    if len(data) != HEADER.size + body_len:
        reason = "truncated" if len(data) < HEADER.size + body_len else "trailing_bytes"
        raise WireError(reason, f"{len(data) - HEADER.size} body bytes, header says {body_len}")
    zeroed = bytes(data[:HEADER.size - 4]) + b"\0\0\0\0"
    if zlib.crc32(memoryview(data)[HEADER.size:], zlib.crc32(zeroed)) != crc:  # incremental: no copy of the body
        raise WireError("bad_crc", "integrity check failed")
    header = Header(Kind(kind), fleet, rnd, dev, Encoding(enc), n_tensors)
    return header, bytes(data[HEADER.size:])


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(raw: bytes, what: str) -> dict[str, Any]:
    """A JSON object from untrusted bytes, or ``WireError("bad_meta")``. Besides malformed text this refuses
    what Python's parser would otherwise turn into other exceptions or values: nesting deep enough for a
    RecursionError, integers over 4,300 digits (ValueError), and the non-JSON constants NaN and Infinity."""
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise WireError("bad_meta", f"{what} is not UTF-8 JSON ({str(exc)[:120]})") from None
    if not isinstance(obj, dict):
        raise WireError("bad_meta", f"{what} must be a JSON object")
    return obj


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise WireError("truncated", f"body ends at {len(self._data)}, needed {self._pos + n}")
        out = self._data[self._pos:self._pos + n]
        self._pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        s = struct.Struct(fmt)
        return s.unpack(self.take(s.size))

    def array(self, dtype: str, n: int) -> np.ndarray:
        dt = np.dtype(dtype)
        return np.frombuffer(self.take(n * dt.itemsize), dtype=dt).astype(np.float32 if dt.kind == "f" else dt)

    def done(self) -> None:
        if self._pos != len(self._data):
            raise WireError("trailing_bytes", f"{len(self._data) - self._pos} bytes after the last tensor")


def _decode_values(r: _Reader, shape: tuple[int, ...], encoding: Encoding) -> np.ndarray:
    size = math.prod(shape)
    if encoding == Encoding.FLOAT32:
        flat = r.array("<f4", size)
    elif encoding == Encoding.FLOAT16:
        flat = r.array("<f2", size)
    elif encoding == Encoding.INT8:
        (scale,) = r.unpack("<f")
        flat = r.array("i1", size).astype(np.float32) * np.float32(scale)
    else:  # TOPK_INT8
        scale, k = r.unpack("<fI")
        if k > size:
            raise WireError("bad_shape", f"top-k lists {k} entries for a tensor of {size}")
        bits = np.unpackbits(np.frombuffer(r.take((size + 7) // 8), np.uint8), bitorder="little")
        if np.any(bits[size:]) or int(bits.sum()) != k:
            raise WireError("bad_indices", f"top-k bitmap marks {int(bits.sum())} entries (padding included), "
                                           f"header says {k}")
        idx = np.flatnonzero(bits[:size])
        flat = np.zeros(size, np.float32)
        flat[idx] = r.array("i1", k).astype(np.float32) * np.float32(scale)
    if not np.all(np.isfinite(flat)):
        raise WireError("non_finite", "tensor holds NaN or Inf")
    return flat.reshape(shape)


def decode_tensors(data: bytes) -> TensorMessage:
    """A MODEL or UPDATE message back to float32 arrays; raises ``WireError`` on anything malformed."""
    header, body = decode_header(data)
    if header.kind not in TENSOR_KINDS:
        raise WireError("bad_kind", f"{header.kind.name} does not carry tensors")
    if header.n_tensors > MAX_TENSORS:
        raise WireError("bad_shape", f"{header.n_tensors} tensors; at most {MAX_TENSORS}")
    r = _Reader(body)
    (meta_len,) = r.unpack("<H")
    meta = parse_json_object(r.take(meta_len), "metadata")
    shapes = []
    for _ in range(header.n_tensors):
        (ndim,) = r.unpack("<B")
        if ndim > MAX_NDIM:
            raise WireError("bad_shape", f"{ndim} dims; at most {MAX_NDIM}")
        shape = r.unpack(f"<{ndim}I")
        # exact integers (no overflow to a small size); zero dims skipped, so an empty tensor cannot carry
        # dimensions that numpy cannot even hold as a shape
        if math.prod(d for d in shape if d) > MAX_BODY_BYTES:
            raise WireError("bad_shape", f"tensor shape {shape} is larger than any message may be")
        shapes.append(tuple(shape))
    tensors = tuple(_decode_values(r, s, header.encoding) for s in shapes)
    r.done()
    return TensorMessage(header, tensors, meta)
