"""A light device's part in the real aggregator's rounds, without I/O: what it answers to a global model.

The protocol is ``DeviceClient``'s (``edge_runtime.fed_client``), with the same encoders: the global model is
checked against the aggregator's Ed25519 key and decoded (``broker.fed_messages.decode_global``); a device the
plan selects answers once per round with an UPDATE (``encode_update`` in the plan's encoding, signed with the
device's key by ``broker.signing.sign_message``, chunked when the plan asks) on its update topic, or declines
(no training consent) with ``declined_round`` in its retained status, as ``DeviceClient`` does.

What differs from a deployed device, and why: the head step runs on synthetic hidden features (a seeded,
class-conditional draw per device: the simulator has no ECG), one softmax-regression gradient step of the
head (``[W (hidden, classes), b]``), which is what ``edge_runtime.personalize`` trains, at microseconds per
device; its loss is reported as ``train_loss`` (Oort's statistical utility). Other weight shapes get a small
seeded perturbation of the same size. The verification and decode of one broadcast, identical for every
device of a worker, are done once per worker (``RoundMember.model``): on a fleet each device does it on its
own processor, in parallel.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.chunking import split_message
from broker.fed_messages import GlobalModel, LocalUpdate, UpdateEncoding, decode_global, encode_update
from broker.signing import sign_message, verify_message

ROWS = 32  # synthetic labelled beats per device and round
LEARNING_RATE = 0.05


def device_key(seed: int, index: int) -> Ed25519PrivateKey:
    """Device ``index``'s update-signing key: derived from the fleet's seed, so the coordinator (which registers
    the public keys with the aggregator) and the worker (which signs) need not exchange 10,000 keys."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"pulsewire-sim:{seed}:{index}".encode()).digest())


@dataclass(frozen=True)
class Broadcast:
    """One decoded global model with its selection as a set (``name in selected`` for 10,000 devices)."""

    model: GlobalModel
    selected: frozenset[str]


def head_step(weights: list[np.ndarray], seed: int, index: int, round_: int) -> tuple[list[np.ndarray], float]:
    """One gradient step of a softmax head on device ``index``'s synthetic features: (delta, loss)."""
    if len(weights) != 2 or weights[0].ndim != 2 or weights[1].shape != (weights[0].shape[1],):
        rng = np.random.default_rng([seed, index, round_])
        return [rng.normal(0, 0.01, w.shape).astype(np.float32) for w in weights], 1.0
    w, b = (np.asarray(x, np.float64) for x in weights)
    hidden, classes = w.shape
    centres = np.random.default_rng([seed, 7]).normal(0, 1, (classes, hidden))  # the fleet's classes
    rng = np.random.default_rng([seed, index, round_])
    mix = np.random.default_rng([seed, index]).dirichlet(np.full(classes, 0.5))  # this device's class mix
    labels = rng.choice(classes, ROWS, p=mix)
    x = centres[labels] + rng.normal(0, 1, (ROWS, hidden))
    z = x @ w + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.mean(np.log(p[np.arange(ROWS), labels] + 1e-12)))
    p[np.arange(ROWS), labels] -= 1
    grad_w, grad_b = x.T @ p / ROWS, p.mean(axis=0)
    return [(-LEARNING_RATE * grad_w).astype(np.float32), (-LEARNING_RATE * grad_b).astype(np.float32)], loss


class RoundMember:
    """A worker's devices' answers to the aggregator (``aggregator_key``: its raw Ed25519 public key)."""

    def __init__(self, fleet: str, aggregator_key: bytes, seed: int) -> None:
        self.fleet, self.seed = fleet, seed
        self.aggregator_key = Ed25519PublicKey.from_public_bytes(aggregator_key)
        self._seen: dict[bytes, Broadcast] = {}

    def model(self, payload: bytes) -> Broadcast:
        """The signed global model, verified and decoded once per worker; WireError/ValueError when bad."""
        hit = self._seen.get(payload)
        if hit is None:
            if len(self._seen) > 8:
                self._seen.clear()
            _, model = decode_global(verify_message(payload, self.aggregator_key))
            hit = self._seen[payload] = Broadcast(model, frozenset(model.plan.selected))
        return hit

    def update_frames(self, model: GlobalModel, index: int, device_id: int, key: Ed25519PrivateKey) -> list[bytes]:
        """Device ``index``'s signed UPDATE for the model's round (several CHUNK frames when the plan asks)."""
        plan = model.plan
        delta, loss = head_step(model.weights, self.seed, index, plan.round)
        examples = ROWS * int(np.random.default_rng([self.seed, index]).integers(1, 16))
        message = encode_update(self.fleet, plan.round, device_id, LocalUpdate(delta, examples, 1, None, loss),
                                UpdateEncoding.parse(plan.encoding))
        message = sign_message(message, key)
        return split_message(message, plan.round & 0xFFFFFFFF, plan.chunk_size) if plan.chunk_size else [message]
