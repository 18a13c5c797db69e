"""Secure-aggregation messages (Bonawitz et al. 2017) on the bus: wire kind SECAGG, one body per step.

Every SECAGG body starts with ``u8 secagg version`` (1), ``u8 step`` and ``u64 session`` (a random number the
aggregator draws for each round attempt and announces in the round plan: a message from an earlier attempt
at the same round, e.g. before an aggregator restart, is refused as ``stale_session``). The header binds
fleet, round and device; devices and the aggregator sign these messages (but see ``END_TO_END_STEPS``).
Integers little-endian; device ids are the u32 wire ids (never 0, which is the aggregator). Step bodies::

    1 ADVERT          device -> aggregator   cipher_pk[32] mask_pk[32]            (X25519 public keys)
                                             [signature[64]]  (consistency rounds: Ed25519 over the keys,
                                             end to end, ``edge_runtime.secagg_plus.advert_message``)
    2 ADVERTS         aggregator -> all      u16 n, n x (u32 device, cipher_pk[32], mask_pk[32])
                      (SecAgg+: -> one)      [u16 m, m x u32 advertiser]  (SecAgg+: the adverts are the
                                             recipient's neighbours', the list is everyone who advertised)
                                             [u16 s, s x (u32 device, signature[64])]  (the adverts' own
                                             signatures; the advertiser list, possibly empty, precedes them)
    3 SHARES          device -> aggregator   u16 n, n x (u32 recipient, u16 len, ciphertext[len])
    4 SHARES_FOR      aggregator -> one      u16 n, n x (u32 sender, u16 len, ciphertext[len]); header device = recipient
    5 MASKED_INPUT    device -> aggregator   u32 n, n x u32 (fixed point in Z_2^32 plus masks)
    6 UNMASK_REQUEST  aggregator -> all      u16 n, n x u32 arrived; u16 m, m x u32 dropped
                                             [u16 s, s x (u32 device, signature[64])]  (consistency check)
    7 UNMASK          device -> aggregator   u16 n, n x (u32 device, share[66]) self-mask seed shares of
                                             arrived devices; u16 m, m x (u32 device, share[66]) mask-key
                                             shares of dropped devices
    8 CONFIRM_REQUEST aggregator -> all      u16 n, n x u32 arrived          (SecAgg+ consistency check)
    9 CONFIRM         device -> aggregator   signature[64]: Ed25519 over the session and the arrived list

A share is a Shamir share, an integer below 2^521 - 1, big-endian in 66 bytes. Decoding raises only
``WireError``: ``bad_secagg`` for a body that does not parse, ``bad_version`` for another secagg version.
"""
from __future__ import annotations

import enum
import functools
import struct
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from broker.secagg_plan import SecAggPlan  # noqa: F401  (re-exported: the plan travels beside these messages)
from broker.wire import Header, Kind, WireError, decode_header, frame_message

SECAGG_VERSION = 1
PREFIX = struct.Struct("<BBQ")
KEY_BYTES = 32
SHARE_BYTES = 66
SIGNATURE_BYTES = 64
MAX_VECTOR = 4 * 1024 * 1024  # a masked input is one u32 per parameter; bound it like every other body


class Step(enum.IntEnum):
    ADVERT = 1
    ADVERTS = 2
    SHARES = 3
    SHARES_FOR = 4
    MASKED_INPUT = 5
    UNMASK_REQUEST = 6
    UNMASK = 7
    CONFIRM_REQUEST = 8
    CONFIRM = 9


#: Aggregator steps sent unsigned in consistency rounds: their content is authenticated end to end by devices
#: (signed adverts, AES-GCM shares), the rest is a malicious aggregator's choice anyway (docs/privacy.md).
END_TO_END_STEPS = frozenset({Step.ADVERTS, Step.SHARES_FOR})


@dataclass(frozen=True)
class KeyAdvert:
    device: int
    cipher_pk: bytes  # X25519 public key for encrypting shares
    mask_pk: bytes  # X25519 public key for pairwise masks
    #: The device's own Ed25519 signature over its keys (consistency rounds), forwarded as is: b"" without.
    signature: bytes = b""


@dataclass(frozen=True)
class AdvertList:
    adverts: tuple[KeyAdvert, ...]
    #: SecAgg+: every device that advertised (the masking graph's vertices); ``adverts`` then holds only the
    #: recipient's neighbours' keys. Empty: ``adverts`` is everyone's (plain SecAgg).
    devices: tuple[int, ...] = ()


@dataclass(frozen=True)
class EncryptedShares:
    sender: int
    to: dict[int, bytes]  # recipient -> nonce + AES-GCM(share of b_sender, share of s_sender)


@dataclass(frozen=True)
class SharesFor:
    """What the aggregator routes to one device: every sender's ciphertext addressed to it."""

    recipient: int
    frm: dict[int, bytes]  # sender -> ciphertext


@dataclass(frozen=True)
class MaskedInput:
    device: int
    vector: np.ndarray  # uint32


@dataclass(frozen=True)
class UnmaskRequest:
    arrived: tuple[int, ...]
    dropped: tuple[int, ...]
    #: The consistency check's evidence: device -> its signature over ``arrived`` (empty without the check).
    signatures: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfirmRequest:
    """The consistency round: the survivor list the aggregator asks each device to sign."""

    arrived: tuple[int, ...]


@dataclass(frozen=True)
class Confirmation:
    device: int
    signature: bytes


@dataclass(frozen=True)
class UnmaskReply:
    device: int
    self_mask_shares: dict[int, int]  # for devices whose masked input arrived
    mask_key_shares: dict[int, int]  # for devices that dropped before sending it


Payload = Union[KeyAdvert, AdvertList, EncryptedShares, SharesFor, MaskedInput, UnmaskRequest, UnmaskReply,
                ConfirmRequest, Confirmation]


@dataclass(frozen=True)
class SecAggMessage:
    step: Step
    session: int
    payload: Payload


# ---------------------------------------------------------------------------------------------- encoding
# Compiled once (a 1,000-device SecAgg+ round encodes and decodes ~150,000 fields at the aggregator):
_U16, _U32, _ID_LENGTH = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<IH")
_ID_SHARE, _ID_SIGNATURE = struct.Struct(f"<I{SHARE_BYTES}s"), struct.Struct(f"<I{SIGNATURE_BYTES}s")
_ID_KEYS = struct.Struct(f"<I{KEY_BYTES}s{KEY_BYTES}s")


def _ids(ids) -> bytes:
    ids = list(ids)
    return struct.pack(f"<H{len(ids)}I", len(ids), *ids)


@functools.lru_cache(maxsize=16)
def _blob_record(length: int) -> struct.Struct:
    """``u32 id, u16 len, blob[len]`` as one fixed-size record: a round's ciphertexts all have one length."""
    return struct.Struct(f"<IH{length}s")


def _blobs(items: dict[int, bytes]) -> bytes:
    lengths = {len(blob) for blob in items.values()}
    if len(lengths) == 1:  # the usual case: one record format for all
        pack, (length,) = _blob_record(next(iter(lengths))).pack, lengths
        return b"".join([_U16.pack(len(items))] + [pack(k, length, items[k]) for k in sorted(items)])
    return b"".join([_U16.pack(len(items))]
                    + [_blob_record(len(items[k])).pack(k, len(items[k]), items[k]) for k in sorted(items)])


def _shares(items: dict[int, int]) -> bytes:
    return _U16.pack(len(items)) + b"".join(_ID_SHARE.pack(k, items[k].to_bytes(SHARE_BYTES, "big"))
                                            for k in sorted(items))


def _signatures(items: dict[int, bytes]) -> bytes:
    parts = [_U16.pack(len(items))]
    for k in sorted(items):
        if len(items[k]) != SIGNATURE_BYTES:
            raise ValueError("an Ed25519 signature is 64 bytes")
        parts += (_U32.pack(k), items[k])
    return b"".join(parts)


class AdvertListEncoder:
    """ADVERTS bodies for many recipients from one set of adverts: each advert's records (keys, signature) and
    the advertiser list are packed once, and each recipient's body joins the records of the adverts it gets.
    The SecAgg+ aggregator sends every device its own neighbours' adverts (n bodies of k adverts each); packing
    every record once per recipient was a third of its CPU in that step. Same bytes as ``AdvertList``'s."""

    def __init__(self, adverts, devices: tuple[int, ...] = ()) -> None:
        self._keys, self._signatures = {}, {}
        for a in adverts:
            if len(a.cipher_pk) != KEY_BYTES or len(a.mask_pk) != KEY_BYTES:
                raise ValueError("X25519 public keys are 32 bytes")
            if a.signature and len(a.signature) != SIGNATURE_BYTES:
                raise ValueError("an Ed25519 signature is 64 bytes")
            self._keys[a.device] = _ID_KEYS.pack(a.device, a.cipher_pk, a.mask_pk)
            if a.signature:
                self._signatures[a.device] = _ID_SIGNATURE.pack(a.device, a.signature)
        self._devices = _ids(devices) if devices else b""
        self._has_devices = bool(devices)

    def body(self, chosen) -> bytes:
        """The body listing the adverts of ``chosen`` (device ids, in this order), then the advertiser list and
        the chosen adverts' signatures (in id order) when there are any."""
        chosen = list(chosen)
        parts = [_U16.pack(len(chosen))]
        parts += map(self._keys.__getitem__, chosen)
        signed = sorted(self._signatures.keys() & chosen)
        if self._has_devices or signed:
            parts.append(self._devices or _U16.pack(0))
        if signed:
            parts.append(_U16.pack(len(signed)))
            parts += map(self._signatures.__getitem__, signed)
        return b"".join(parts)


def encode_secagg(fleet_id: int, round_: int, session: int, payload: Payload) -> bytes:
    """The wire message for one step; the header's device id is the sender (0 for the aggregator's
    broadcasts, the recipient for SHARES_FOR)."""
    if isinstance(payload, KeyAdvert):
        step, device, body = Step.ADVERT, payload.device, payload.cipher_pk + payload.mask_pk + payload.signature
        if payload.signature and len(payload.signature) != SIGNATURE_BYTES:
            raise ValueError("an Ed25519 signature is 64 bytes")
        if len(payload.cipher_pk) != KEY_BYTES or len(payload.mask_pk) != KEY_BYTES:
            raise ValueError("X25519 public keys are 32 bytes")
    elif isinstance(payload, AdvertList):
        step, device = Step.ADVERTS, 0
        body = AdvertListEncoder(payload.adverts, payload.devices).body(a.device for a in payload.adverts)
    elif isinstance(payload, EncryptedShares):
        step, device, body = Step.SHARES, payload.sender, _blobs(payload.to)
    elif isinstance(payload, SharesFor):
        step, device, body = Step.SHARES_FOR, payload.recipient, _blobs(payload.frm)
    elif isinstance(payload, MaskedInput):
        vector = np.ascontiguousarray(payload.vector, dtype="<u4").ravel()
        step, device, body = Step.MASKED_INPUT, payload.device, struct.pack("<I", vector.size) + vector.tobytes()
    elif isinstance(payload, UnmaskRequest):
        step, device, body = Step.UNMASK_REQUEST, 0, _ids(payload.arrived) + _ids(payload.dropped)
        if payload.signatures:
            body += _signatures(payload.signatures)
    elif isinstance(payload, ConfirmRequest):
        step, device, body = Step.CONFIRM_REQUEST, 0, _ids(payload.arrived)
    elif isinstance(payload, Confirmation):
        if len(payload.signature) != SIGNATURE_BYTES:
            raise ValueError("an Ed25519 signature is 64 bytes")
        step, device, body = Step.CONFIRM, payload.device, payload.signature
    elif isinstance(payload, UnmaskReply):
        step, device = Step.UNMASK, payload.device
        body = _shares(payload.self_mask_shares) + _shares(payload.mask_key_shares)
    else:
        raise TypeError(f"not a secure-aggregation payload: {type(payload).__name__}")
    return frame_secagg(fleet_id, round_, session, step, device, body)


def frame_secagg(fleet_id: int, round_: int, session: int, step: Step, device: int, body: bytes) -> bytes:
    """A SECAGG message around an already-encoded step body (``AdvertListEncoder.body``)."""
    return frame_message(Header(Kind.SECAGG, fleet_id, round_, device),
                         PREFIX.pack(SECAGG_VERSION, step, session) + body)


# ---------------------------------------------------------------------------------------------- decoding
class _Body:
    """A step body read front to back; every read checks the length first (a short body is a WireError)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def _need(self, n: int) -> int:
        """The current position, after checking that ``n`` more bytes are there."""
        if self.pos + n > len(self.data):
            raise WireError("bad_secagg", f"body ends at {len(self.data)}, needed {self.pos + n}")
        return self.pos

    def take(self, n: int) -> bytes:
        pos = self._need(n)
        self.pos += n
        return self.data[pos:pos + n]

    def unpack(self, fmt: str) -> tuple:
        s = struct.Struct(fmt)
        return s.unpack(self.take(s.size))

    def count(self) -> int:
        (n,) = _U16.unpack_from(self.data, self._need(2))
        self.pos += 2
        return n

    def records(self, record: struct.Struct) -> list[tuple]:
        """A count, then that many fixed-size records (unpacked in one pass)."""
        n = self.count()
        pos = self._need(n * record.size)
        self.pos += n * record.size
        return list(record.iter_unpack(self.data[pos:self.pos]))

    def ids(self) -> tuple[int, ...]:
        n = self.count()
        ids = self.unpack(f"<{n}I")
        _unique(ids)
        return ids

    def blobs(self) -> dict[int, bytes]:
        n, data = self.count(), self.data
        if n and self.pos + _ID_LENGTH.size <= len(data):  # the usual case: every blob the same length, read as
            record = _blob_record(_ID_LENGTH.unpack_from(data, self.pos)[1])  # fixed-size records in one pass
            end = self.pos + n * record.size
            if end <= len(data):
                rows = list(record.iter_unpack(data[self.pos:end]))
                if all(row[1] == record.size - _ID_LENGTH.size for row in rows):
                    self.pos, out = end, {k: blob for k, _, blob in rows}
                    _unique_count(out, n)
                    return out
        out = {}
        for _ in range(n):
            k, length = _ID_LENGTH.unpack_from(data, self._need(_ID_LENGTH.size))
            self.pos += _ID_LENGTH.size
            out[k] = self.take(length)
        _unique_count(out, n)
        return out

    def shares(self) -> dict[int, int]:
        rows = self.records(_ID_SHARE)
        out = {k: int.from_bytes(share, "big") for k, share in rows}
        _unique_count(out, len(rows))
        return out

    def signatures(self) -> dict[int, bytes]:
        rows = self.records(_ID_SIGNATURE)
        out = dict(rows)
        _unique_count(out, len(rows))
        return out

    def left(self) -> int:
        return len(self.data) - self.pos

    def done(self) -> None:
        if self.pos != len(self.data):
            raise WireError("bad_secagg", f"{len(self.data) - self.pos} bytes after the step body")


def _unique(ids) -> None:
    _unique_count(set(ids), len(ids))


def _unique_count(items, n: int) -> None:
    if len(items) != n or 0 in items:
        raise WireError("bad_secagg", "device ids repeat or include 0 (the aggregator)")


def decode_secagg(data: bytes) -> tuple[Header, SecAggMessage]:
    """One SECAGG message (unsigned; ``broker.signing.verify_message`` first for a signed one)."""
    return decode_secagg_body(*decode_header(data))


def decode_secagg_body(header: Header, raw: bytes) -> tuple[Header, SecAggMessage]:
    """One SECAGG message from its decoded header and plain body (``broker.signing.verify_split``)."""
    if header.kind != Kind.SECAGG:
        raise WireError("bad_kind", f"expected SECAGG, got {header.kind.name}")
    if len(raw) < PREFIX.size:
        raise WireError("bad_secagg", "body shorter than the secagg prefix")
    version, step, session = PREFIX.unpack_from(raw)
    if version != SECAGG_VERSION:
        raise WireError("bad_version", f"secagg version {version}; this side speaks {SECAGG_VERSION}")
    if step not in Step._value2member_map_:
        raise WireError("bad_secagg", f"unknown secagg step {step}")
    b = _Body(raw[PREFIX.size:])
    step = Step(step)
    payload: Payload
    if step == Step.ADVERT:
        payload = KeyAdvert(header.device_id, b.take(KEY_BYTES), b.take(KEY_BYTES),
                            b.take(SIGNATURE_BYTES) if b.left() else b"")
    elif step == Step.ADVERTS:
        adverts = [KeyAdvert(dev, cipher_pk, mask_pk) for dev, cipher_pk, mask_pk in b.records(_ID_KEYS)]
        _unique([a.device for a in adverts])
        devices = b.ids() if b.left() else ()
        signed = b.signatures() if b.left() else {}
        adverts = [KeyAdvert(a.device, a.cipher_pk, a.mask_pk, signed.get(a.device, b"")) for a in adverts]
        payload = AdvertList(tuple(adverts), tuple(devices))
    elif step == Step.SHARES:
        payload = EncryptedShares(header.device_id, b.blobs())
    elif step == Step.SHARES_FOR:
        payload = SharesFor(header.device_id, b.blobs())
    elif step == Step.MASKED_INPUT:
        (n,) = b.unpack("<I")
        if n > MAX_VECTOR:
            raise WireError("bad_secagg", f"masked input of {n} entries exceeds {MAX_VECTOR}")
        payload = MaskedInput(header.device_id, np.frombuffer(b.take(4 * n), "<u4").astype(np.uint32))
    elif step == Step.UNMASK_REQUEST:
        arrived, dropped = b.ids(), b.ids()
        if set(arrived) & set(dropped):
            raise WireError("bad_secagg", "a device is listed as both arrived and dropped")
        payload = UnmaskRequest(arrived, dropped, b.signatures() if b.left() else {})
    elif step == Step.CONFIRM_REQUEST:
        payload = ConfirmRequest(b.ids())
    elif step == Step.CONFIRM:
        payload = Confirmation(header.device_id, b.take(SIGNATURE_BYTES))
    else:
        payload = UnmaskReply(header.device_id, b.shares(), b.shares())
    b.done()
    if step in (Step.ADVERT, Step.SHARES, Step.SHARES_FOR, Step.MASKED_INPUT, Step.UNMASK, Step.CONFIRM) \
            and header.device_id == 0:
        raise WireError("bad_secagg", f"{step.name} must name a device in its header")
    return header, SecAggMessage(step, session, payload)
