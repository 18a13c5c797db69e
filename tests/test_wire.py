import struct
import zlib

import numpy as np
import pytest

from broker.chunking import Reassembler, split_message
from broker.wire import HEADER, Encoding, Kind, WireError, decode_header, decode_tensors, encode_tensors
from tests.golden.wire_cases import GOLDEN_DIR, _tensors, golden_cases


@pytest.mark.parametrize("name", sorted(golden_cases()))
def test_encoder_reproduces_golden_bytes(name):
    assert golden_cases()[name] == (GOLDEN_DIR / f"{name}.bin").read_bytes()


@pytest.mark.parametrize("encoding, tol", [("float32", 0), ("float16", 1e-3), ("int8", 2 / 127)])
def test_golden_updates_decode_to_their_tensors(encoding, tol):
    msg = decode_tensors((GOLDEN_DIR / f"update_{encoding}.bin").read_bytes())
    assert msg.header.kind == Kind.UPDATE and msg.header.round == 3 and msg.header.device_id == 101
    assert msg.meta == {"num_examples": 1865}
    for got, want in zip(msg.tensors, _tensors()):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=tol * np.abs(want).max(), rtol=0)


def test_topk_keeps_the_largest_entries_and_zeros_the_rest():
    msg = decode_tensors((GOLDEN_DIR / "update_topk_int8.bin").read_bytes())
    first = msg.tensors[0].ravel()
    assert np.count_nonzero(first) == 3  # ceil(0.5 * 6)
    assert set(np.flatnonzero(first)) == {0, 1, 3}  # |0.5|, |-1.0|, |2.0|


def test_chunks_reassemble_in_any_order_with_duplicates():
    message = (GOLDEN_DIR / "update_int8.bin").read_bytes()
    frames = split_message(message, message_id=9, chunk_size=40)
    assert all(len(f) <= 40 for f in frames) and len(frames) > 3
    order = list(np.random.default_rng(0).permutation(len(frames)))
    r = Reassembler()
    outputs = [r.feed(frames[i]) for i in order[:-1] + order[:2]]  # duplicates before completion
    assert outputs == [None] * len(outputs)
    assert r.feed(frames[order[-1]]) == message
    assert r.feed(frames[order[0]]) is None  # redelivery after completion is ignored


def test_reassembler_bounds_incomplete_messages():
    message = (GOLDEN_DIR / "model_float32.bin").read_bytes()
    r = Reassembler(max_pending=2)
    for mid in range(5):
        assert r.feed(split_message(message, mid, 40)[0]) is None
    assert r.dropped == 3


def _recrc(data: bytes) -> bytes:
    """Fix the CRC after a deliberate edit, so the check under test is the one that fires."""
    raw = bytearray(data)
    raw[HEADER.size - 4:HEADER.size] = b"\0\0\0\0"
    raw[HEADER.size - 4:HEADER.size] = struct.pack("<I", zlib.crc32(bytes(raw)))
    return bytes(raw)


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    raw = bytearray(data)
    raw[offset:offset + len(value)] = value
    return _recrc(bytes(raw))


GOOD = encode_tensors(Kind.UPDATE, 1, 2, 3, [np.ones((2, 2), np.float32)], Encoding.FLOAT32)


@pytest.mark.parametrize("data, reason", [
    (GOOD[:10], "truncated"),
    (GOOD[:-1], "truncated"),
    (GOOD + b"\0", "trailing_bytes"),
    (_patched(GOOD, 0, b"XX"), "bad_magic"),
    (_patched(GOOD, 2, b"\x07"), "bad_version"),
    (_patched(GOOD, 3, b"\x63"), "bad_kind"),
    (_patched(GOOD, 16, b"\x09"), "bad_encoding"),
    (_patched(GOOD, 17, b"\x02"), "bad_flags"),
    (_patched(GOOD, 17, b"\x01"), "signed"),
    (_patched(GOOD, 20, struct.pack("<I", 2**31)), "oversized"),
    (GOOD[:-1] + bytes([GOOD[-1] ^ 1]), "bad_crc"),
    (_patched(GOOD, len(GOOD) - 4, struct.pack("<f", float("nan"))), "non_finite"),
    (_patched(GOOD, HEADER.size + 4, b"\x09"), "bad_shape"),
])
def test_malformed_messages_are_rejected_with_a_reason(data, reason):
    with pytest.raises(WireError) as err:
        decode_tensors(data)
    assert err.value.reason == reason


def test_wrong_shape_table_is_truncation_not_a_crash():
    bigger = _patched(GOOD, HEADER.size + 5, struct.pack("<I", 3))  # claims a 3x2 tensor, data for 2x2
    with pytest.raises(WireError, match="truncated"):
        decode_tensors(bigger)


def test_encoder_refuses_nan_weights():
    with pytest.raises(ValueError, match="NaN"):
        encode_tensors(Kind.UPDATE, 1, 1, 1, [np.array([np.nan], np.float32)])


def test_random_corruption_never_escapes_as_another_exception():
    rng = np.random.default_rng(1)
    seeds = [(GOLDEN_DIR / f).read_bytes() for f in ("update_topk_int8.bin", "model_float32.bin")]
    for i in range(3000):
        data = bytearray(seeds[i % 2])
        for _ in range(rng.integers(1, 4)):
            data[rng.integers(0, len(data))] = rng.integers(0, 256)
        data = _recrc(bytes(data)) if i % 3 else bytes(data)  # most mutations get past the CRC
        try:
            decode_tensors(data)
        except WireError:
            pass


def test_header_helper_reports_header_fields():
    header, body = decode_header((GOLDEN_DIR / "model_float32.bin").read_bytes())
    assert header.kind == Kind.MODEL and header.fleet_id == 0x50570001 and header.n_tensors == 2
    assert len(body) == (GOLDEN_DIR / "model_float32.bin").stat().st_size - HEADER.size


def test_shape_whose_product_overflows_int64_is_rejected():
    huge = _patched(GOOD, HEADER.size + 4, bytes([8]) + struct.pack("<8I", *([2**32 - 1] * 8)))
    with pytest.raises(WireError):
        decode_tensors(huge)


def test_empty_tensor_with_dimensions_numpy_cannot_hold_is_rejected():
    # found by the hypothesis fuzz: (0, 587202560, 3942645760) has no elements but no numpy array has that shape
    body = struct.pack("<H", 2) + b"{}" + bytes([3]) + struct.pack("<3I", 0, 587202560, 3942645760)
    header = bytearray(GOOD[:HEADER.size])
    header[20:24] = struct.pack("<I", len(body))
    with pytest.raises(WireError) as err:
        decode_tensors(_recrc(bytes(header) + body))
    assert err.value.reason == "bad_shape"


def test_topk_bitmap_must_agree_with_k():
    data = bytearray((GOLDEN_DIR / "update_topk_int8.bin").read_bytes())
    meta_len = struct.unpack_from("<H", data, HEADER.size)[0]
    bitmap_at = HEADER.size + 2 + meta_len + (1 + 8) + (1 + 4) + 8  # two tensor-table rows, then scale + k
    data[bitmap_at] ^= 0x80  # mark one more entry than k says
    with pytest.raises(WireError) as err:
        decode_tensors(_recrc(bytes(data)))
    assert err.value.reason == "bad_indices"


def test_a_round_plan_too_large_for_the_metadata_field_is_refused_with_what_to_do():
    """The metadata length is 16 bits: a plan naming ~7,000 devices cannot be framed; the error says so
    (it used to be a bare struct.error)."""
    from broker.fed_messages import GlobalModel, RoundPlan, encode_global

    plan = RoundPlan(1, tuple(f"sim{i:06d}" for i in range(7000)))
    with pytest.raises(ValueError, match="select fewer devices per round"):
        encode_global("ward", GlobalModel(plan, [np.zeros(10, np.float32)]))
    assert encode_global("ward", GlobalModel(RoundPlan(1, plan.selected[:4000]), [np.zeros(10, np.float32)]))
