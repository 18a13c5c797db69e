"""Secure aggregation: the sum comes out exactly, single inputs stay hidden, dropouts are survived."""
import numpy as np
import pytest

from edge_runtime.secure_aggregation import (FixedPoint, SecAggDevice, SecAggServer, shamir_combine,
                                             shamir_split)


def _round(n, size, drop_before_input=(), drop_after_input=(), threshold=None, seed=0):
    rng = np.random.default_rng(seed)
    threshold = threshold or (2 * n) // 3 + 1
    devices = {i: SecAggDevice(i, threshold) for i in range(1, n + 1)}
    adverts = [d.advertise() for d in devices.values()]
    server = SecAggServer(threshold, size, adverts={a.device: a for a in adverts})
    shares = [d.share_keys(adverts) for d in devices.values()]
    for d in devices.values():
        d.receive_shares(shares)
    shared = sorted(devices)
    updates = {i: rng.normal(0, 0.05, size).astype(np.float32) for i in devices}
    inputs = [devices[i].masked_input(updates[i], shared) for i in devices if i not in drop_before_input]
    arrived = sorted(m.device for m in inputs)
    dropped = sorted(set(shared) - set(arrived))
    replies = [devices[i].unmask(arrived, dropped) for i in arrived if i not in drop_after_input]
    total = server.sum(shared, inputs, replies)
    expected = sum(FixedPoint().decode_sum(FixedPoint().encode(updates[i])) for i in arrived)
    return total, expected, inputs, updates


def test_the_sum_is_exact_and_inputs_look_random():
    total, expected, inputs, updates = _round(6, 500)
    np.testing.assert_allclose(total, expected, atol=1e-9)
    single = FixedPoint().decode_sum(inputs[0].vector)
    assert np.corrcoef(single, updates[1])[0, 1] < 0.2  # the masked vector tells nothing about the update


def test_thirty_percent_dropping_after_sending_masked_input():
    total, expected, _, _ = _round(10, 200, drop_after_input=(2, 5, 9))
    np.testing.assert_allclose(total, expected, atol=1e-9)


def test_devices_dropping_before_their_input_are_unmasked_out():
    total, expected, inputs, _ = _round(10, 200, drop_before_input=(3, 7))
    assert len(inputs) == 8
    np.testing.assert_allclose(total, expected, atol=1e-9)


def test_too_few_survivors_cannot_unmask():
    with pytest.raises(ValueError, match="needed"):
        _round(6, 50, drop_after_input=(1, 2, 3, 4), threshold=4)


def test_shamir_threshold():
    secret = bytes(range(32))
    shares = shamir_split(secret, 5, 3, [1, 2, 3, 4, 5])
    assert shamir_combine({k: shares[k] for k in (1, 4, 5)}) == secret
    assert shamir_combine({k: shares[k] for k in (2, 3)}) != secret


def test_a_device_never_reveals_both_secrets_of_another():
    d = SecAggDevice(1, 2)
    with pytest.raises(ValueError, match="both"):
        d.unmask([2, 3], [3])
