"""Where differential-privacy noise comes from: a cryptographic generator, or a seeded one for simulations.

Why: a DP guarantee assumes the adversary cannot predict the noise. numpy's PCG64 is not a cryptographic
generator (its state can be recovered from outputs), and a seeded one is predictable by whoever knows the seed;
either voids the guarantee in deployment. Every DP mechanism of the project (DP-FedAvg's sum and adaptive
clipping's count on the aggregator, local DP, distributed-DP shares and DP-SGD on devices, the tabular task's
statistics release) draws through a ``NoiseSource`` chosen by name:

- ``secure`` (the default of every deployed path): the ChaCha20 keystream of ``cryptography`` under a 256-bit
  key from ``os.urandom`` and a zero nonce (fresh key per source, so the stream is never reused). Each 8
  keystream bytes, read as a little-endian u64, give a uniform double with a 53-bit mantissa, ``(w >> 11)·2^-53``
  in [0, 1); Gaussians come from pairs of those by Box-Muller, ``sqrt(-2 ln(1 - u1))·(cos, sin)(2π u2)``.
- ``seeded``: numpy's ``default_rng(seed)``, reproducible, for simulations, benches and tests only; the
  services accept it only when asked by name, log a warning and record it (``label``) in their reports.

What ``secure`` does not protect: the floating-point representation of the samples (Mironov 2012; Jin et al.
2022 show Box-Muller Gaussians leak through the low-order bits of the noisy value). No snapping or discrete
Gaussian is applied here; ``docs/privacy.md`` states it as not protected. Nor the tail beyond 8.57σ (the largest
Box-Muller radius from 53-bit uniforms), whose mass is not added to the ledgers' δ.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, Callable, Protocol

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

log = logging.getLogger(__name__)

Size = int | Sequence[int] | None
_MANTISSA = 2.0 ** -53
REKEY_BLOCKS = 2 ** 31  # half of ChaCha20's 32-bit block counter


class NoiseSource(Protocol):
    """The draws DP code makes (the subset of ``numpy.random.Generator`` it uses, same signatures)."""

    #: What reports record: "secure", or "seeded:<seed>".
    label: str

    def random(self, size: Size = None) -> Any:
        """Uniform in [0, 1) (Poisson sampling decisions)."""

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Size = None) -> Any:
        """Gaussian noise N(loc, scale²)."""

    def resumed(self, marker: int) -> NoiseSource:
        """The source to continue with after a restart from a checkpoint (never the same stream again)."""


def _count(size: Size) -> int:
    return 1 if size is None else int(np.prod(size, dtype=np.int64))


def _shaped(values: np.ndarray, size: Size) -> Any:
    return float(values[0]) if size is None else values.reshape(size)


class ChaChaNoise:
    """Draws from the ChaCha20 keystream under ``key`` (32 bytes; default: ``os.urandom``). A fixed key is for
    known-answer tests only. Thread-safe: a device draws on its training and network threads."""

    label = "secure"

    def __init__(self, key: bytes | None = None) -> None:
        self._fixed_key = key is not None
        self._lock = threading.Lock()
        self._rekey(bytes(key) if key is not None else os.urandom(32))

    def _rekey(self, key: bytes) -> None:
        self._encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
        self._blocks = 0  # 64-byte keystream blocks produced under this key

    def words(self, n: int) -> np.ndarray:
        """The next ``n`` 64-bit little-endian words of the keystream. ChaCha20's 32-bit block counter ends after
        256 GiB (``cryptography`` then raises): a long-lived service re-keys from ``os.urandom`` well before."""
        with self._lock:
            blocks = -(-8 * n // 64)
            if self._blocks + blocks >= REKEY_BLOCKS and not self._fixed_key:
                self._rekey(os.urandom(32))
            self._blocks += blocks
            return np.frombuffer(self._encryptor.update(bytes(8 * n)), "<u8")

    def random(self, size: Size = None) -> Any:
        return _shaped((self.words(_count(size)) >> np.uint64(11)) * _MANTISSA, size)

    def standard_normal(self, n: int) -> np.ndarray:
        """``n`` N(0, 1) by Box-Muller: uniforms (u1, u2) in keystream order give r·cos θ then r·sin θ, with
        r = sqrt(-2 ln(1 − u1)) (1 − u1 is in (0, 1]: the log is finite) and θ = 2π u2."""
        u = ((self.words(2 * ((n + 1) // 2)) >> np.uint64(11)) * _MANTISSA).reshape(-1, 2)
        radius = np.sqrt(-2.0 * np.log1p(-u[:, 0]))
        angle = 2.0 * np.pi * u[:, 1]
        return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).ravel()[:n]

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Size = None) -> Any:
        if np.any(np.asarray(scale) < 0):
            raise ValueError("scale < 0")
        return _shaped(loc + scale * self.standard_normal(_count(size)), size)

    def resumed(self, marker: int) -> ChaChaNoise:
        return ChaChaNoise()


class SeededNoise:
    """numpy's PCG64 from ``seed``: reproducible and predictable; simulations, benches and tests only."""

    def __init__(self, seed: int | Sequence[int] = 0, generator: np.random.Generator | None = None) -> None:
        self.seed = seed
        self.label = f"seeded:{seed}"
        self._rng = generator if generator is not None else np.random.default_rng(seed)

    def random(self, size: Size = None) -> Any:
        return self._rng.random(size)

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Size = None) -> Any:
        return self._rng.normal(loc, scale, size)

    def resumed(self, marker: int) -> SeededNoise:
        """A new point of the stream, derived from ``marker`` (the rounds done) and this stream's next draw."""
        return SeededNoise(self.seed, np.random.default_rng([marker, int(self._rng.integers(1 << 31))]))


#: The noise sources by config name.
NOISE_SOURCES: dict[str, Callable[[int | Sequence[int] | None], NoiseSource]] = {
    "secure": lambda seed: ChaChaNoise(),
    "seeded": lambda seed: SeededNoise(0 if seed is None else seed),
}


def check_noise_name(name: str) -> str:
    """``name`` if it names a source, else a ValueError listing them (config validation)."""
    if name not in NOISE_SOURCES:
        raise ValueError(f"DP noise source {name!r} unknown; choose one of {', '.join(NOISE_SOURCES)}")
    return name


def make_noise(name: str = "secure", seed: int | Sequence[int] | None = None, where: str | None = None
               ) -> NoiseSource:
    """The source ``name`` ("secure" or "seeded"; ``seed`` only for "seeded", 0 when omitted). ``where``: the
    deployed service asking, which then logs a warning for a seeded source (its reports carry the label)."""
    if check_noise_name(name) == "secure" and seed is not None:
        raise ValueError("a seed makes DP noise predictable: it needs the 'seeded' noise source, which is not for "
                         "deployment (the 'secure' source takes no seed)")
    source = NOISE_SOURCES[name](seed)
    if where is not None and name != "secure":
        log.warning("%s: DP noise from %s (numpy PCG64, predictable): no DP guarantee in deployment; asked for "
                    "explicitly, recorded in the report", where, source.label)
    return source
