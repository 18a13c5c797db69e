"""SecAgg+ (Bell et al. 2020): secure aggregation where each device shares with O(log n) neighbours only.

In Bonawitz et al. 2017 every pair of devices agrees a mask and every device Shamir-shares its secrets with
every other: O(n) keys, shares and masks per device, O(n²) for the round. SecAgg+ replaces the complete
graph by a sparse random one: a device masks with, and shares its secrets among, its k neighbours, and a
dropped device's masks are removed with t of its neighbours' shares. The sum is the same (every mask is
still added by one end of an edge and subtracted by the other); what a device costs falls to O(k).

The graph is a Harary graph H(k, n) (each position joined to the k/2 positions on either side of it on a
ring) over the round's selected devices (listed in the signed round plan, ``SecAggPlan.members``) in an
order drawn from a public seed (the round's session number, in the same plan): every device has exactly k
neighbours, every device and the aggregator derive the same graph from that public data before anyone
advertises, and without the seed no one can choose who neighbours whom. The seed is the
aggregator's; it is honest but curious here (docs/privacy.md says what a seed-grinding aggregator could do).

``choose_parameters`` picks k and t from n, the dropout rate and the share of corrupt devices:
- correctness: a device's secret must be recoverable: at least t of its k neighbours survive, failing with
  probability n·P[Bin(k, 1 − dropout) < t] ≤ 2^-η (union over devices);
- privacy: the aggregator with the corrupt devices must not hold t shares of an honest device's secrets:
  n·P[Bin(k, corrupt) ≥ t] ≤ 2^-σ;
- no partial sums: the honest devices that sent inputs must stay connected once corrupt and dropped devices
  are removed, or the aggregator would learn the sum of each piece. On the ring of H(k, n) that fails only
  if k/2 consecutive positions are all removed: n·(dropout + corrupt)^(k/2) ≤ 2^-σ.
The neighbourhood of a randomly ordered Harary graph is treated as a random k-subset (the bounds are
binomial tails; the corrupt set is fixed before the seed is drawn, dropouts do not depend on the graph);
if no k < n − 1 satisfies them the complete graph (plain SecAgg) is used.

The consistency check (the active-adversary round of Bonawitz et al., kept by SecAgg+): before any device
reveals a share, every device signs (Ed25519) the list of devices whose masked inputs the aggregator says
arrived; the aggregator must show each device at least ``consistency_threshold`` signatures over the very
list it asks that device to unmask for. With the threshold above (n + corrupt·n)/2, two different lists
cannot both collect that many signatures unless an honest device signed both, which it never does: an
aggregator that tells devices different dropout sets (to unmask one device's input by difference) is
refused by every honest device.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from scipy.stats import binom


class InconsistentRound(RuntimeError):
    """The aggregator did not show that the devices agree on who sent an input: no share is revealed."""


# ---------------------------------------------------------------------------------------------- the graph
@dataclass(frozen=True)
class MaskingGraph:
    """Who masks with and shares with whom: H(k, n) over ``devices`` in the order drawn from ``seed``."""

    devices: tuple[int, ...]
    k: int
    seed: int

    def __post_init__(self) -> None:
        n = len(self.devices)
        if len(set(self.devices)) != n or n < 2:
            raise ValueError("a masking graph needs at least two distinct devices")
        if not (self.k == n - 1 or (self.k % 2 == 0 and 2 <= self.k < n - 1)):
            raise ValueError(f"k = {self.k}: use an even degree below n - 1 = {n - 1}, or n - 1 (complete graph)")

    @cached_property
    def _order(self) -> tuple[tuple[int, ...], dict[int, int]]:
        """The devices in the seed's order, and each device's position on the ring."""
        order = tuple(self.devices[i] for i in np.random.default_rng(self.seed).permutation(len(self.devices)))
        return order, {d: p for p, d in enumerate(order)}

    @cached_property
    def _known(self) -> dict[int, frozenset[int]]:
        return {}

    def neighbours(self, device: int) -> frozenset[int]:
        """The k devices ``device`` masks with: O(k) once the order is drawn (a device needs only its own)."""
        known = self._known.get(device)
        if known is None:
            known = self._known[device] = self._neighbours_of(device)
        return known

    def _neighbours_of(self, device: int) -> frozenset[int]:
        if self.k == len(self.devices) - 1:
            if device not in self.devices:
                raise KeyError(device)
            return frozenset(self.devices) - {device}
        order, position = self._order
        p, n, half = position[device], len(order), self.k // 2
        return frozenset(order[(p + s) % n] for s in range(-half, half + 1) if s != 0)


def graph_for(devices: list[int], degree: int, seed: int) -> MaskingGraph | None:
    """The round's graph over the selected devices (``SecAggPlan.members``, public in the signed round plan;
    None for ``degree`` 0: plain SecAgg, everyone with everyone). A degree that does not fit (odd, or n − 1 or more) becomes the nearest usable one."""
    if degree == 0:
        return None
    n = len(devices)
    k = n - 1 if degree >= n - 1 else max(2, degree - degree % 2)
    return MaskingGraph(tuple(sorted(devices)), k, seed)


# ---------------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class SecAggPlusParameters:
    n: int
    #: Neighbours per device (n − 1: the complete graph, plain SecAgg).
    k: int
    #: Shares of a device's secrets needed to recover them (out of its k neighbours).
    threshold: int
    #: Signatures over one survivor list that a device needs to see before it unmasks.
    consistency_threshold: int


def choose_parameters(n: int, dropout: float, corrupt: float, sigma: int = 40, eta: int = 20) -> SecAggPlusParameters:
    """The smallest even k (and its t) meeting the correctness (2^-η) and privacy (2^-σ) bounds above."""
    if n < 3 or not 0 <= dropout < 1 or not 0 <= corrupt < 0.5 or dropout + corrupt >= 1:
        raise ValueError("need n >= 3, 0 <= dropout < 1, 0 <= corrupt < 0.5 and dropout + corrupt < 1")
    consistency = math.floor(n * (1 + corrupt) / 2) + 1
    if consistency > math.floor(n * (1 - dropout)):
        raise ValueError(f"with {dropout:.0%} dropping, fewer than the {consistency} devices the consistency check "
                         f"needs survive; lower the dropout or corruption bound")
    fail, leak = 2.0 ** -eta / n, 2.0 ** -sigma / n
    for k in range(2, n - 1, 2):
        if n * (dropout + corrupt) ** (k // 2) > 2.0 ** -sigma:  # the survivors' graph could split
            continue
        for t in range(2, k + 1):
            if binom.sf(t - 1, k, corrupt) > leak:  # P[corrupt neighbours >= t]
                continue
            if binom.cdf(t - 1, k, 1 - dropout) <= fail:  # P[surviving neighbours < t]
                return SecAggPlusParameters(n, k, t, consistency)
            break  # a larger t only fails correctness more
    return SecAggPlusParameters(n, n - 1, max(2, math.floor(2 * (n - 1) / 3) + 1), consistency)


# ---------------------------------------------------------------------------------------------- consistency
def advert_message(session: int, device: int, cipher_pk: bytes, mask_pk: bytes) -> bytes:
    """What a device signs over its keys (end to end: the aggregator forwards the signature unchanged, so it
    cannot substitute keys of its own for a neighbour's without the recipient noticing)."""
    return b"pulsewire-secagg-advert-v1:" + session.to_bytes(8, "big") + device.to_bytes(4, "big") + cipher_pk + mask_pk


def advert_signed_by(directory: dict, session: int, advert) -> bool:
    """Whether ``advert`` carries its device's valid signature (the device's key from ``directory``)."""
    key = directory.get(advert.device)
    if key is None or not advert.signature:
        return False
    try:
        key.verify(advert.signature, advert_message(session, advert.device, advert.cipher_pk, advert.mask_pk))
        return True
    except InvalidSignature:
        return False


def survivors_message(session: int, survivors: list[int], advertisers: tuple[int, ...] = ()) -> bytes:
    """What a device signs: the session, the sorted list of devices whose masked inputs arrived and a digest
    of the advertiser list it was sent (the masking graph's vertices: signatures over one survivor list then
    also certify that their signers derived the same graph)."""
    graph = hashlib.sha256(b"".join(d.to_bytes(4, "big") for d in sorted(advertisers))).digest() if advertisers else b""
    return b"pulsewire-secagg-survivors-v1:" + session.to_bytes(8, "big") + b"".join(
        d.to_bytes(4, "big") for d in sorted(survivors)) + graph


@dataclass
class ConsistencyCheck:
    """One device's side: sign one survivor list per session, unmask only for a list enough devices signed."""

    device: int
    session: int
    signing_key: Ed25519PrivateKey
    #: Ed25519 public key of every device of the fleet (registered out of band, like the update keys).
    directory: dict[int, Ed25519PublicKey]
    threshold: int
    signed: frozenset[int] | None = None
    #: The advertisers this device was told of (set at the adverts step; empty: not bound).
    advertisers: tuple[int, ...] = ()

    def sign(self, survivors: list[int]) -> bytes:
        """The signature over ``survivors``; a second, different list in the same session is refused."""
        listed = frozenset(survivors)
        if len(listed) != len(survivors) or (self.signed is not None and self.signed != listed):
            raise InconsistentRound(f"device {self.device}: asked to sign a second, different (or repeating) "
                                    f"survivor list")
        self.signed = listed
        return self.signing_key.sign(survivors_message(self.session, sorted(listed), self.advertisers))

    def verify(self, arrived: list[int], signatures: dict[int, bytes]) -> None:
        """Raise InconsistentRound unless ``arrived`` is the list this device signed and at least ``threshold``
        devices of it signed that very list."""
        if self.signed is None or len(arrived) != len(self.signed) or frozenset(arrived) != self.signed:
            raise InconsistentRound(f"device {self.device}: the unmask request lists other survivors than the "
                                    f"list it signed")
        message = survivors_message(self.session, arrived, self.advertisers)
        valid = 0
        for signer, signature in signatures.items():
            key = self.directory.get(signer)
            if key is None or signer not in self.signed:  # a set: O(1) per signature, not O(n)
                continue
            try:
                key.verify(signature, message)
                valid += 1
            except InvalidSignature:
                continue
        if valid < self.threshold:
            raise InconsistentRound(f"device {self.device}: {valid} valid signatures over the survivor list (and "
                                    f"advertiser list), "
                                    f"{self.threshold} needed; the aggregator may be telling devices different lists")
