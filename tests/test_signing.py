"""Signed wire messages: verification, tampering, replay into another round."""
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.signing import is_signed, sign_message, verify_message
from broker.wire import Encoding, Kind, WireError, decode_tensors, encode_tensors
from tests.test_wire import _recrc


def _message(round_=3):
    return encode_tensors(Kind.UPDATE, 7, round_, 101, [np.arange(6, dtype=np.float32)], Encoding.INT8,
                          {"num_examples": 5})


def test_sign_then_verify_gives_back_the_plain_message():
    key = Ed25519PrivateKey.generate()
    signed = sign_message(_message(), key)
    assert is_signed(signed) and len(signed) == len(_message()) + 64
    assert verify_message(signed, key.public_key()) == _message()
    with pytest.raises(WireError) as err:
        decode_tensors(signed)  # ordinary decoders refuse to skip the check
    assert err.value.reason == "signed"


@pytest.mark.parametrize("attack, reason", [("other_key", "bad_signature"), ("tamper_body", "bad_signature"),
                                            ("replay_round", "bad_signature"), ("unsigned", "unsigned")])
def test_what_fails_verification(attack, reason):
    key = Ed25519PrivateKey.generate()
    signed = bytearray(sign_message(_message(), key))
    if attack == "other_key":
        data = sign_message(_message(), Ed25519PrivateKey.generate())
    elif attack == "tamper_body":
        signed[40] ^= 1
        data = _recrc(bytes(signed))
    elif attack == "replay_round":
        struct.pack_into("<I", signed, 8, 4)  # the same update presented as round 4
        data = _recrc(bytes(signed))
    else:
        data = _message()
    with pytest.raises(WireError) as err:
        verify_message(data, key.public_key())
    assert err.value.reason == reason
