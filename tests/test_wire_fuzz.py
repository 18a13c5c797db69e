"""Property-based fuzzing of every decoder that reads untrusted bytes off the bus.

The property: whatever arrives, a decoder returns a value or raises ``WireError`` (a stable reason code the
aggregator counts); nothing else escapes (no RecursionError from nested JSON, no OverflowError from a huge
number in the metadata, no IndexError from a short table). Inputs are built the way an attacker would:
valid messages of every kind and encoding, then mutated (bytes flipped, cut, inserted, fields overwritten)
and mostly re-checksummed so the CRC does not hide the body parsers from the fuzzer; metadata is arbitrary
JSON (deep nesting, 5,000-digit integers, NaN and Infinity, wrong types) in the fields the decoders read.

Derandomized with no example database, so CI runs the same 10,000 cases every time.
"""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.chunking import Reassembler
from broker.device_messages import decode_alert, decode_status
from broker.fed_messages import decode_global, decode_update
from broker.secagg_messages import decode_secagg
from broker.signing import sign_message, verify_message
from broker.wire import HEADER, Encoding, Header, Kind, WireError, decode_header, decode_tensors, frame_message

FUZZ = settings(max_examples=10_000, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
META_FIELDS = ("n_delta", "num_examples", "local_steps", "train_loss", "n_weights", "round", "selected", "local",
               "encoding", "chunk_size", "final", "state")

_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
            | st.text(max_size=8))
json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
#: Hostile JSON text that ``json.dumps`` never writes but a sender can: deep nesting, giant integers, bare NaN.
hostile_json = st.sampled_from(["[" * 5000 + "]" * 5000, '{"n_delta":' + "9" * 5000 + "}", '{"a":NaN}',
                                '{"num_examples":1e999,"n_delta":1,"local_steps":1}', "[]", "nul", '"x"',
                                '{"n_delta":1,"num_examples":1,"local_steps":1,"train_loss":1' + "0" * 400 + "}",
                                '{"round":Infinity,"n_weights":1,"selected":[],"local":{},"encoding":"x",'
                                '"chunk_size":null,"final":false}'])


@st.composite
def metas(draw) -> dict:
    """A metadata object whose keys are mostly the ones the decoders read, with values of any JSON type."""
    keys = draw(st.lists(st.sampled_from(META_FIELDS) | st.text(max_size=5), max_size=8, unique=True))
    return {k: draw(json_values) for k in keys}


_numbers = st.integers(-3, 5) | st.sampled_from([2**31, 2**64, 10**30, 1e308, -0.0, 0.5, 1e-300]) | \
    st.floats(allow_nan=False, allow_infinity=False)
#: Metadata that gets past the "required keys" checks, so the range and consistency checks are fuzzed too.
update_metas = st.fixed_dictionaries({"n_delta": _numbers, "num_examples": _numbers, "local_steps": _numbers},
                                     optional={"train_loss": _numbers | st.none()})
global_metas = st.fixed_dictionaries({"n_weights": _numbers, "round": _numbers, "selected": st.lists(st.text(max_size=3)),
                                      "local": st.dictionaries(st.text(max_size=3), json_values, max_size=2),
                                      "encoding": st.sampled_from(["float32", "int8", "topk:0.1", "x"]),
                                      "chunk_size": st.none() | _numbers, "final": st.booleans()})


@st.composite
def tensor_messages(draw) -> bytes:
    kind = draw(st.sampled_from([Kind.MODEL, Kind.UPDATE]))
    encoding = draw(st.sampled_from(list(Encoding)))
    shapes = draw(st.lists(st.lists(st.integers(0, 5), max_size=3).map(tuple), max_size=4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    meta = draw(metas() | update_metas | global_metas)
    if draw(st.integers(0, 2)) == 0:  # coherent metadata: the message may decode, the success path is fuzzed too
        n = len(shapes) // draw(st.sampled_from([1, 2])) or 1
        meta = ({"n_delta": n, "num_examples": 5, "local_steps": 2, "train_loss": 0.5} if kind == Kind.UPDATE else
                {"n_weights": n, "round": 1, "selected": ["a"], "local": {}, "encoding": "int8", "chunk_size": None,
                 "final": False})
    meta_bytes = (draw(hostile_json).encode() if draw(st.integers(0, 9)) == 0
                  else json.dumps(meta, separators=(",", ":")).encode())
    parts = [struct.pack("<H", len(meta_bytes)), meta_bytes]
    values = []
    for shape in shapes:
        parts.append(struct.pack(f"<B{len(shape)}I", len(shape), *shape))
        flat = rng.normal(size=int(np.prod(shape))).astype(np.float32)
        if encoding == Encoding.FLOAT32:
            values.append(flat.astype("<f4").tobytes())
        elif encoding == Encoding.FLOAT16:
            values.append(flat.astype("<f2").tobytes())
        elif encoding == Encoding.INT8:
            values.append(struct.pack("<f", 0.01) + rng.integers(-127, 128, flat.size, dtype=np.int8).tobytes())
        else:
            keep = rng.random(flat.size) < 0.5
            values.append(struct.pack("<fI", 0.01, int(keep.sum())) + np.packbits(keep, bitorder="little").tobytes()
                          + rng.integers(-127, 128, int(keep.sum()), dtype=np.int8).tobytes())
    header = Header(kind, draw(st.integers(0, 2**32 - 1)), draw(st.sampled_from([1, 1, 0, 2, 2**32 - 1])),
                    draw(st.integers(0, 3)),
                    encoding, len(shapes))
    return frame_message(header, b"".join(parts + values))


@st.composite
def other_messages(draw) -> bytes:
    """CHUNK, ALERT, STATUS and SECAGG frames with arbitrary bodies (JSON for the JSON kinds)."""
    kind = draw(st.sampled_from([Kind.CHUNK, Kind.ALERT, Kind.STATUS, Kind.SECAGG]))
    if kind in (Kind.ALERT, Kind.STATUS):
        body = (draw(hostile_json).encode() if draw(st.booleans())
                else json.dumps(draw(metas()), separators=(",", ":")).encode())
    elif kind == Kind.CHUNK:
        body = struct.pack("<IHH", draw(st.integers(0, 3)), draw(st.integers(0, 4)), draw(st.integers(0, 4))) + \
            draw(st.binary(max_size=64))
    else:
        body = draw(st.binary(max_size=8)) + draw(st.binary(max_size=200))
    return frame_message(Header(kind, draw(st.integers(0, 5)), draw(st.integers(0, 3)), draw(st.integers(0, 3))), body)


def _recrc(data: bytes) -> bytes:
    if len(data) < HEADER.size:
        return data
    raw = bytearray(data)
    raw[HEADER.size - 4:HEADER.size] = b"\0\0\0\0"
    raw[HEADER.size - 4:HEADER.size] = struct.pack("<I", zlib.crc32(bytes(raw)))
    return bytes(raw)


@st.composite
def hostile_bytes(draw) -> bytes:
    source = draw(st.sampled_from(["tensor"] * 6 + ["other"] * 3 + ["binary"]))
    base = draw({"tensor": tensor_messages(), "other": other_messages(), "binary": st.binary(max_size=80)}[source])
    if draw(st.integers(0, 4)) == 0:
        base = sign_message(base, KEY) if _well_formed(base) else base
    data = bytearray(base)
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 4]))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "field"]))
        if op == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "cut" and data:
            at = draw(st.integers(0, len(data)))
            data = data[:at] if draw(st.booleans()) else data[:at] + data[at + draw(st.integers(1, 8)):]
        elif op == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "field" and len(data) >= HEADER.size:  # a header field to an edge value
            offset, fmt = draw(st.sampled_from([(3, "<B"), (16, "<B"), (17, "<B"), (18, "<H"), (20, "<I")]))
            top = 2 ** (8 * struct.calcsize(fmt)) - 1
            struct.pack_into(fmt, data, offset, draw(st.sampled_from([0, 1, 2, 5, 6, 7, top, top // 2 + 1])))
    fixed = draw(st.integers(0, 9)) > 1  # most cases keep a valid length + CRC so the body parsers run
    if fixed and len(data) >= HEADER.size:
        struct.pack_into("<I", data, 20, len(data) - HEADER.size)
    return _recrc(bytes(data)) if fixed else bytes(data)


def _well_formed(data: bytes) -> bool:
    try:
        decode_header(data)
        return True
    except WireError:
        return False


DECODERS = (decode_header, decode_tensors, decode_update, decode_global, decode_status, decode_alert,
            decode_secagg, lambda d: decode_update(verify_message(d, KEY.public_key())), lambda d: Reassembler().feed(d))


@FUZZ
@given(hostile_bytes())
def test_every_decoder_returns_or_raises_wire_error(data):
    for decode in DECODERS:
        try:
            decode(data)
        except WireError as exc:
            assert exc.reason and " " not in exc.reason  # a code to count by, not prose


def test_the_fuzzer_reaches_the_body_parsers():
    """Guard against a property that holds only because everything trips the CRC: a valid message decodes."""
    ok = frame_message(Header(Kind.UPDATE, 1, 1, 1, Encoding.INT8, 1),
                       struct.pack("<H", 2) + b"{}" + struct.pack("<BI", 1, 3) + struct.pack("<f", 0.5) + b"\x01\x02\x03")
    assert decode_tensors(ok).tensors[0].tolist() == [0.5, 1.0, 1.5]
    assert decode_tensors(verify_message(sign_message(ok, KEY), KEY.public_key())).tensors[0].size == 3
