"""Mask expansion: ChaCha20 (RFC 8439) keyed by HKDF-SHA256 (RFC 5869) from the agreed seed, checked against a
keystream computed here from the RFCs alone (hmac/hashlib and a pure-Python ChaCha20 block function)."""
import hashlib
import hmac
import struct

import numpy as np

from edge_runtime.secure_aggregation import PAIR_MASK, SELF_MASK, FixedPoint, prg_mask

MASK32 = 0xFFFFFFFF


def _rotl(v: int, c: int) -> int:
    return ((v << c) & MASK32) | (v >> (32 - c))


def _quarter(s: list[int], a: int, b: int, c: int, d: int) -> None:
    s[a] = (s[a] + s[b]) & MASK32; s[d] = _rotl(s[d] ^ s[a], 16)  # noqa: E702
    s[c] = (s[c] + s[d]) & MASK32; s[b] = _rotl(s[b] ^ s[c], 12)  # noqa: E702
    s[a] = (s[a] + s[b]) & MASK32; s[d] = _rotl(s[d] ^ s[a], 8)  # noqa: E702
    s[c] = (s[c] + s[d]) & MASK32; s[b] = _rotl(s[b] ^ s[c], 7)  # noqa: E702


def chacha20_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    """RFC 8439 section 2.3, written from the RFC."""
    state = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *struct.unpack("<8I", key), counter,
             *struct.unpack("<3I", nonce)]
    s = list(state)
    for _ in range(10):
        for a, b, c, d in ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
                           (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)):
            _quarter(s, a, b, c, d)
    return struct.pack("<16I", *((x + y) & MASK32 for x, y in zip(s, state)))


def hkdf_sha256(ikm: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 with an empty salt (HashLen zero bytes)."""
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out, i = out + block, i + 1
    return out[:length]


def reference_mask(seed: bytes, size: int, purpose: bytes) -> np.ndarray:
    okm = hkdf_sha256(seed, b"pulsewire-secagg-mask-v1:" + purpose, 44)
    key, nonce = okm[:32], okm[32:]
    stream = b"".join(chacha20_block(key, counter, nonce) for counter in range(-(-4 * size // 64)))
    return np.array(struct.unpack(f"<{size}I", stream[:4 * size]), np.uint32)


def test_the_reference_block_function_meets_the_rfc_8439_vector():
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a00000000")
    block = chacha20_block(key, 1, nonce)
    assert block[:16].hex() == "10f1e7e4d13b5915500fdd1fa32071c4"
    assert block[-16:].hex() == "b5129cd1de164eb9cbd083e8a2503c4e"


def test_mask_expansion_is_chacha20_keyed_by_hkdf_of_the_seed():
    seed = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)
    for purpose in (PAIR_MASK, SELF_MASK):
        np.testing.assert_array_equal(prg_mask(seed, 37, purpose), reference_mask(seed, 37, purpose))
    # the first four words, pinned: any change of the derivation is a wire-incompatible protocol change
    assert reference_mask(seed, 4, PAIR_MASK).tolist() == [2763722458, 2416883535, 1658869157, 850972504]
    assert not np.array_equal(prg_mask(seed, 8, PAIR_MASK), prg_mask(seed, 8, SELF_MASK))


def test_a_masked_fixed_point_vector_unmasks_to_its_value():
    fixed = FixedPoint(bound=1.0, scale=2.0**20, max_devices=10)
    x = np.array([0.5, -0.25, 0.0, 1e-3], np.float32)
    seed = b"\x07" * 32
    masked = fixed.encode(x) + reference_mask(seed, 4, SELF_MASK)
    np.testing.assert_allclose(fixed.decode_sum((masked - prg_mask(seed, 4, SELF_MASK)).astype(np.uint32)), x,
                               atol=1 / fixed.scale)
