"""The DP noise sources: the secure one's keystream -> uniform -> Gaussian expansion pinned by a known-answer
vector, its distribution checked under a fixed key (deterministic, never flaky), the seeded one reproducible."""
import math

import numpy as np
import pytest
from scipy import stats

from edge_runtime.dp_noise import ChaChaNoise, SeededNoise, make_noise

#: RFC 8439 appendix A.1, test vector #1: the ChaCha20 block of the all-zero key and nonce, counter 0.
RFC8439_ZERO_BLOCK = bytes.fromhex(
    "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
    "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586")


def _uniforms_by_hand(block: bytes) -> list[float]:
    """The documented mapping in plain Python: each 8 bytes little-endian, top 53 bits, times 2^-53."""
    return [(int.from_bytes(block[i:i + 8], "little") >> 11) / 2 ** 53 for i in range(0, len(block), 8)]


def test_the_keystream_to_uniform_mapping_matches_the_rfc_8439_known_answer():
    uniforms = ChaChaNoise(bytes(32)).random(8)
    assert uniforms.tolist() == _uniforms_by_hand(RFC8439_ZERO_BLOCK)
    assert uniforms[0] == 0.5634451882632473  # 0x903df1a0ade0b876 >> 11, times 2^-53


def test_the_gaussian_expansion_is_box_muller_on_the_pinned_uniforms():
    u = _uniforms_by_hand(RFC8439_ZERO_BLOCK)  # 8 uniforms: 4 pairs (radius, angle)
    want = [math.sqrt(-2 * math.log1p(-u[i])) * f(2 * math.pi * u[i + 1]) for i in range(0, 8, 2)
            for f in (math.cos, math.sin)]
    got = ChaChaNoise(bytes(32)).normal(0.0, 1.0, 8)
    assert got[0] == 0.6957334291781295
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    np.testing.assert_allclose(ChaChaNoise(bytes(32)).normal(3.0, 0.5, (2, 4)), 3.0 + 0.5 * np.reshape(want, (2, 4)),
                               rtol=1e-15)


def test_a_fixed_key_gives_standard_gaussians_and_uniforms():
    source = ChaChaNoise(bytes(range(32)))
    z = source.normal(0.0, 1.0, 200_000)
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1.0) < 0.01
    assert stats.kstest(z, "norm").pvalue > 0.01
    u = source.random(200_000)
    assert u.min() >= 0.0 and u.max() < 1.0 and stats.kstest(u, "uniform").pvalue > 0.01
    odd = source.normal(0.0, 2.0, 7)  # an odd count uses half a pair
    assert odd.shape == (7,) and np.all(np.isfinite(odd))
    assert isinstance(source.normal(0.0, 1.0), float)


def test_secure_sources_are_keyed_afresh_and_refuse_a_seed():
    a, b = make_noise("secure"), make_noise("secure")
    assert a.label == "secure" and not np.array_equal(a.normal(0, 1, 16), b.normal(0, 1, 16))
    with pytest.raises(ValueError, match="seeded"):
        make_noise("secure", seed=3)
    with pytest.raises(ValueError, match="unknown"):
        make_noise("pcg64")
    with pytest.raises(ValueError):
        a.normal(0.0, -1.0, 3)


def test_the_seeded_source_reproduces_numpys_stream_and_is_labelled():
    a, b = make_noise("seeded", 7), make_noise("seeded", 7)
    assert a.label == "seeded:7"
    np.testing.assert_array_equal(a.normal(0.0, 2.0, 50), b.normal(0.0, 2.0, 50))
    np.testing.assert_array_equal(SeededNoise([3, 17]).normal(0.0, 1.0, 5),
                                  np.random.default_rng([3, 17]).normal(0.0, 1.0, 5))
    again = make_noise("seeded", 7)
    again.normal(0.0, 2.0, 50)
    resumed = again.resumed(4)
    assert resumed.label == "seeded:7" and not np.array_equal(resumed.normal(0, 1, 5), make_noise("seeded", 7)
                                                              .normal(0, 1, 5))


def test_a_long_lived_source_rekeys_from_the_os_before_chachas_block_counter_ends(monkeypatch):
    """ChaCha20's 32-bit block counter ends after 2^32 blocks (``cryptography`` raises); the source re-keys
    before. Shown with the limit lowered to 2 blocks and the OS's next key made the zero key: after the second
    block the words are the RFC 8439 zero-key block again, i.e. a new keystream from counter 0."""
    from edge_runtime import dp_noise

    monkeypatch.setattr(dp_noise, "REKEY_BLOCKS", 2)
    source = ChaChaNoise()
    source.random(8)  # block 1 under the first key
    monkeypatch.setattr(dp_noise.os, "urandom", lambda n: bytes(n))
    assert source.random(8).tolist() == _uniforms_by_hand(RFC8439_ZERO_BLOCK)  # would be block 2: re-keyed
    assert ChaChaNoise(bytes(32)).random(16)[8:].tolist() != _uniforms_by_hand(RFC8439_ZERO_BLOCK)
