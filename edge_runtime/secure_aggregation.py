"""Secure aggregation (Bonawitz et al. 2017): the aggregator learns the sum of the updates, nothing else.

Threat model implemented: an honest-but-curious aggregator and broker that see every message, and
devices that may drop out at any step; no device colludes with the aggregator beyond ``threshold - 1``
others. (The paper's active-adversary variant adds end-to-end signatures on the advertised keys: over MQTT
devices sign their keys for the neighbours in rounds with the consistency check, ``KeyAdvert.signature``;
without it the forwarded keys are signed by the aggregator only.)

Each device quantizes its update to fixed point in Z_2^32 and adds masks before sending it:
- a pairwise mask per other device, from an X25519 agreement, added by one side and subtracted by the
  other, so all pairwise masks cancel in the sum;
- a self mask from a seed b_i, so a device that is late (not dropped) is still hidden.
Every mask is the ChaCha20 keystream under a key derived from its seed with HKDF (``prg_mask``).
To survive dropouts, every device Shamir-shares (t of n) its self-mask seed and its mask-agreement
private key with the others, encrypted pairwise (X25519 + AES-GCM) so that the aggregator, which routes
them, cannot read them. In the unmasking step the survivors reveal, for each device, exactly one of the
two: the self-mask seed of a device whose masked input arrived, or the mask key of a device that dropped
before sending it. Messages are the dataclasses of ``broker.secagg_messages``, which also defines their
bytes; ``edge_runtime.secagg_client`` and ``training.federated.secagg_round`` carry them over MQTT.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker.secagg_messages import EncryptedShares, KeyAdvert, MaskedInput, UnmaskReply  # noqa: F401 (re-exported)
from edge_runtime.secagg_plus import ConsistencyCheck, MaskingGraph

PRIME = 2**521 - 1  # Mersenne prime: a 32-byte secret is one field element
RAW = serialization.Encoding.Raw


# ---------------------------------------------------------------------------------------------- primitives
def shamir_split(secret: bytes, n: int, t: int, xs: list[int]) -> dict[int, int]:
    """Shares (x -> y) of ``secret`` for the points ``xs``; any ``t`` of them recover it."""
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(t - 1)]
    return {x: _horner(coeffs, x) for x in xs}


def _horner(coeffs: list[int], x: int) -> int:
    """The polynomial at ``x`` by Horner's rule: t small multiplications instead of t modular powers (every
    device splits two secrets among its k neighbours each round)."""
    y = 0
    for c in reversed(coeffs):
        y = (y * x + c) % PRIME
    return y


def _exact_terms(xs: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """For each point x_i: the numerator Π(−x_j) and denominator Π(x_i − x_j) over j ≠ i of its Lagrange weight
    at 0, as exact integers (the points are small wire ids, so these stay a few hundred bits: cheap, unlike
    the same products reduced mod a 521-bit prime at every step)."""
    terms = []
    for xi in xs:
        num = den = 1
        for xj in xs:
            if xj != xi:
                num *= -xj
                den *= xi - xj
        terms.append((num, den))
    return tuple(terms)


def _batch_inverse(values: list[int]) -> list[int]:
    """1/v mod PRIME for every v, with one modular exponentiation for all (Montgomery's trick): an inversion
    mod 2^521 − 1 is a 521-bit exponentiation (0.6 ms here), and under SecAgg+ a 1,000-device round
    interpolates ~1,000 secrets, each with its own holders and so its own t denominators."""
    prefix = [1]
    for v in values:
        prefix.append(prefix[-1] * v % PRIME)
    inverse = pow(prefix[-1], PRIME - 2, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inverse * prefix[i] % PRIME
        inverse = inverse * values[i] % PRIME
    return out


def lagrange_weights(point_sets: list[tuple[int, ...]]) -> dict[tuple[int, ...], tuple[int, ...]]:
    """Interpolation weights at 0 for each distinct set of points (the same holders, as in plain SecAgg where
    the survivors unmask every secret, are computed once)."""
    distinct = list(dict.fromkeys(point_sets))
    exact = [_exact_terms(xs) for xs in distinct]
    inverses = iter(_batch_inverse([den % PRIME for terms in exact for _, den in terms]))
    return {xs: tuple(num * next(inverses) % PRIME for num, _ in terms) for xs, terms in zip(distinct, exact)}


def shamir_combine_many(secrets_shares: list[dict[int, int]], length: int = 32) -> list[bytes]:
    """Lagrange interpolation at 0 of each secret from its shares (x -> y); fewer than t shares give garbage,
    not an error."""
    point_sets = [tuple(sorted(shares)) for shares in secrets_shares]
    weights = lagrange_weights(point_sets)
    out = []
    for shares, xs in zip(secrets_shares, point_sets):
        total = sum(shares[x] * w for x, w in zip(xs, weights[xs])) % PRIME
        out.append((total % 2 ** (8 * length)).to_bytes(length, "big"))
    return out


def shamir_combine(shares: dict[int, int], length: int = 32) -> bytes:
    """Lagrange interpolation at 0 of one secret."""
    return shamir_combine_many([shares], length)[0]


def _kdf(shared: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


#: What a mask seed is expanded for: a self mask and a pairwise mask never share a keystream.
SELF_MASK, PAIR_MASK = b"self", b"pair"


def mask_cipher_params(seed: bytes, purpose: bytes) -> tuple[bytes, bytes]:
    """ChaCha20 key (32 bytes) and full 16-byte nonce block (block counter 0, little endian, then the 96-bit
    nonce of RFC 8439) derived from the agreed ``seed`` with HKDF-SHA256, one derivation per ``purpose``.

    Why HKDF and not the seed itself: the seed is a Diffie-Hellman output or a random secret whose use may
    grow; deriving a fresh key and nonce per purpose keeps two expansions of one seed from ever sharing a
    keystream (which would leak the difference of two masked vectors)."""
    okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=None,
               info=b"pulsewire-secagg-mask-v1:" + purpose).derive(seed)
    return okm[:32], b"\x00\x00\x00\x00" + okm[32:44]


def prg_mask(seed: bytes, size: int, purpose: bytes = PAIR_MASK) -> np.ndarray:
    """A uniform uint32 vector from a 32-byte seed: the ChaCha20 keystream (RFC 8439) under a key and nonce
    derived from the seed, read as little-endian 32-bit words.

    A cryptographic generator is what the masking argument needs: a masked input is indistinguishable from
    uniform only if the mask is, to anyone without the seed (numpy's PCG64, used before, has a state that
    can be recovered from a few outputs, and with it every later mask). 2^32 blocks of 64 bytes cover any
    model we train (the counter would wrap only past 2^34 coordinates)."""
    key, nonce = mask_cipher_params(seed, purpose)
    stream = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(bytes(4 * size))
    return np.frombuffer(stream, dtype="<u4")  # read-only view of the keystream: callers add it, never write it


@dataclass(frozen=True)
class FixedPoint:
    """x -> round(clip(x, -bound, bound) * scale) mod 2^32; sums of up to ``max_devices`` stay unambiguous."""

    bound: float = 1.0
    scale: float = 2.0**20
    max_devices: int = 1000

    def __post_init__(self) -> None:
        if self.bound * self.scale * self.max_devices >= 2**31:
            raise ValueError("bound x scale x max_devices must stay below 2^31 for the sum to decode")

    def encode(self, x: np.ndarray) -> np.ndarray:
        q = np.round(np.clip(x, -self.bound, self.bound) * self.scale).astype(np.int64)
        return (q % 2**32).astype(np.uint32)

    def decode_sum(self, total: np.ndarray) -> np.ndarray:
        signed = total.astype(np.int64)
        signed[signed >= 2**31] -= 2**32
        return signed / self.scale


# Messages: defined once in broker.secagg_messages (their wire layout lives there too).
# ---------------------------------------------------------------------------------------------- device
class SecAggDevice:
    """One device's secrets and messages for one round. With a ``graph`` (SecAgg+) it masks with and shares
    among its neighbours only (``threshold`` then counts neighbours); with ``consistency`` it reveals shares
    only for a survivor list that enough devices signed (``edge_runtime.secagg_plus``)."""

    def __init__(self, device: int, threshold: int, fixed: FixedPoint = FixedPoint(), graph: MaskingGraph | None = None,
                 consistency: ConsistencyCheck | None = None) -> None:
        self.device, self.threshold, self.fixed = device, threshold, fixed
        self.graph, self.consistency = graph, consistency
        self._cipher_sk, self._mask_sk = X25519PrivateKey.generate(), X25519PrivateKey.generate()
        self._self_seed = os.urandom(32)
        self._peers: dict[int, KeyAdvert] = {}
        self._held: dict[int, tuple[int, int]] = {}  # sender -> (share of b_sender, share of s_sender)
        self._cipher_keys: dict[int, bytes] = {}

    def advertise(self) -> KeyAdvert:
        return KeyAdvert(self.device, self._cipher_sk.public_key().public_bytes(RAW, serialization.PublicFormat.Raw),
                         self._mask_sk.public_key().public_bytes(RAW, serialization.PublicFormat.Raw))

    def _near(self, device: int) -> bool:
        """Whether this device masks with and shares with ``device`` (everyone, without a graph)."""
        return self.graph is None or device == self.device or device in self.graph.neighbours(self.device)

    def share_keys(self, adverts: list[KeyAdvert]) -> EncryptedShares:
        self._peers = {a.device: a for a in adverts if self._near(a.device)}
        self._cipher_keys = {}
        if len(self._peers) < self.threshold:
            raise ValueError(f"only {len(self._peers)} devices (neighbours) advertised keys; the threshold is "
                             f"{self.threshold}")
        xs = sorted(self._peers)
        mask_sk = self._mask_sk.private_bytes(RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        b_shares = shamir_split(self._self_seed, len(xs), self.threshold, xs)
        s_shares = shamir_split(mask_sk, len(xs), self.threshold, xs)
        out = {}
        for j in xs:
            if j == self.device:
                self._held[j] = (b_shares[j], s_shares[j])
                continue
            plain = b_shares[j].to_bytes(66, "big") + s_shares[j].to_bytes(66, "big")
            nonce = os.urandom(12)
            out[j] = nonce + AESGCM(self._cipher_key(j)).encrypt(nonce, plain, _aad(self.device, j))
        return EncryptedShares(self.device, out)

    def receive_shares(self, messages: list[EncryptedShares]) -> None:
        for m in messages:
            blob = m.to.get(self.device)
            if blob is None or m.sender == self.device:
                continue
            plain = AESGCM(self._cipher_key(m.sender)).decrypt(blob[:12], blob[12:], _aad(m.sender, self.device))
            self._held[m.sender] = (int.from_bytes(plain[:66], "big"), int.from_bytes(plain[66:], "big"))

    def masked_input(self, update: np.ndarray, survivors: list[int]) -> MaskedInput:
        """``survivors``: devices whose shares were delivered (the others are out of this round)."""
        y = self.fixed.encode(update).astype(np.uint32)
        np.add(y, prg_mask(self._self_seed, y.size, SELF_MASK), out=y)  # in place, wrapping mod 2^32
        for j in survivors:
            if j == self.device or not self._near(j):
                continue
            m = prg_mask(_pair_seed(self._mask_sk, self._peers[j].mask_pk, self.device, j), y.size)
            (np.add if self.device < j else np.subtract)(y, m, out=y)
        return MaskedInput(self.device, y)

    def confirm(self, arrived: list[int]) -> bytes:
        """The consistency round: this device's signature over the survivor list the aggregator sent it."""
        if self.consistency is None:
            raise ValueError("this round has no consistency check")
        return self.consistency.sign(arrived)

    def unmask(self, arrived: list[int], dropped: list[int], signatures: dict[int, bytes] | None = None) -> UnmaskReply:
        """The shares that remove the masks: of the self-mask seed of each neighbour that ``arrived``, of the mask
        key of each that ``dropped``. With a consistency check, ``signatures`` must show enough devices signed
        ``arrived`` (else InconsistentRound, and nothing is revealed)."""
        if set(arrived) & set(dropped):
            raise ValueError("a device cannot have both arrived and dropped: refusing to reveal both secrets")
        if self.consistency is not None:
            self.consistency.verify(arrived, signatures or {})
        return UnmaskReply(self.device, {i: self._held[i][0] for i in arrived if i in self._held},
                           {i: self._held[i][1] for i in dropped if i in self._held})

    def _cipher_key(self, peer: int) -> bytes:
        """The AES-GCM key shared with ``peer``: one X25519 agreement per peer and round (it encrypts the shares
        this device sends and decrypts those it receives), not one per message."""
        key = self._cipher_keys.get(peer)
        if key is None:
            shared = self._cipher_sk.exchange(X25519PublicKey.from_public_bytes(self._peers[peer].cipher_pk))
            key = self._cipher_keys[peer] = _kdf(shared, b"pulsewire-secagg-shares")
        return key


def _aad(sender: int, recipient: int) -> bytes:
    return f"{sender}->{recipient}".encode()


def _pair_seed(sk: X25519PrivateKey, peer_pk: bytes, a: int, b: int) -> bytes:
    shared = sk.exchange(X25519PublicKey.from_public_bytes(peer_pk))
    lo, hi = sorted((a, b))
    return _kdf(shared, f"pulsewire-secagg-mask-{lo}-{hi}".encode())


# ---------------------------------------------------------------------------------------------- aggregator
@dataclass
class SecAggServer:
    threshold: int
    size: int
    fixed: FixedPoint = field(default_factory=FixedPoint)
    adverts: dict[int, KeyAdvert] = field(default_factory=dict)
    #: SecAgg+: who masked with whom (None: everyone with everyone).
    graph: MaskingGraph | None = None

    def sum(self, shared: list[int], inputs: list[MaskedInput], replies: list[UnmaskReply]) -> np.ndarray:
        """The decoded sum of the inputs that arrived. ``shared``: devices whose shares went out."""
        if len(replies) < self.threshold and self.graph is None:
            raise ValueError(f"{len(replies)} unmasking replies; {self.threshold} are needed")
        arrived = sorted(m.device for m in inputs)
        dropped = sorted(set(shared) - set(arrived))
        total = np.zeros(self.size, np.uint32)
        for m in inputs:
            np.add(total, m.vector, out=total)  # uint32: wraps mod 2^32, as the masks do
        # who revealed which share, read once (not once per secret: O(replies · secrets) at 1,000 devices)
        self_shares: dict[int, dict[int, int]] = {i: {} for i in arrived}
        key_shares: dict[int, dict[int, int]] = {i: {} for i in dropped}
        for r in replies:
            for owner, share in r.self_mask_shares.items():
                self_shares.get(owner, {})[r.device] = share
            for owner, share in r.mask_key_shares.items():
                key_shares.get(owner, {})[r.device] = share
        # every secret reconstructed at once: one modular inversion for all their Lagrange weights
        seeds = shamir_combine_many([self._shares(i, self_shares[i]) for i in arrived])
        keys = shamir_combine_many([self._shares(i, key_shares[i]) for i in dropped])
        for seed in seeds:  # remove self masks
            np.subtract(total, prg_mask(seed, self.size, SELF_MASK), out=total)
        for i, key in zip(dropped, keys):  # remove the pairwise masks the arrived devices added towards a dropped one
            sk = X25519PrivateKey.from_private_bytes(key)
            for j in arrived:
                if self.graph is not None and j not in self.graph.neighbours(i):
                    continue
                m = prg_mask(_pair_seed(sk, self.adverts[j].mask_pk, i, j), self.size)
                (np.subtract if j < i else np.add)(total, m, out=total)  # j added +m when j < i: undo with -m
        return self.fixed.decode_sum(total.astype(np.uint32))

    def _shares(self, owner: int, got: dict[int, int]) -> dict[int, int]:
        """The shares of ``owner``'s secret the replies revealed; fewer than t is an error, not a wrong sum."""
        if len(got) < self.threshold:
            raise ValueError(f"{len(got)} shares of device {owner}'s secret; {self.threshold} are needed")
        # t shares determine the polynomial; interpolating through more costs O(m²) for nothing (and under
        # SecAgg+ every secret has its own set of holders, so the weights are not shared between secrets)
        return {device: got[device] for device in sorted(got)[:self.threshold]}
