"""The SECAGG codec's fast paths keep the wire contract (``docs/wire-protocol.md``): the aggregator's per-recipient
ADVERTS bodies, packed from records it encodes once, are byte for byte the documented layout, and SHARES bodies
read as fixed-size records decode like the general (mixed-length) path."""
from __future__ import annotations

import struct

import pytest

from broker.secagg_messages import (
    PREFIX,
    SECAGG_VERSION,
    AdvertList,
    AdvertListEncoder,
    EncryptedShares,
    KeyAdvert,
    SharesFor,
    Step,
    decode_secagg,
    encode_secagg,
)
from broker.wire import HEADER, Header, Kind, WireError, frame_message


def _adverts() -> list[KeyAdvert]:
    return [KeyAdvert(d, bytes([d]) * 32, bytes([d + 100]) * 32, bytes([d + 200]) * 64 if d % 2 else b"")
            for d in (3, 7, 10, 21)]


def _body(message: bytes) -> bytes:
    """The step body after the header and the secagg prefix (u8 version, u8 step, u64 session)."""
    return message[HEADER.size + 10:]


def test_per_recipient_advert_bodies_are_the_documented_layout():
    adverts, everyone = _adverts(), (3, 7, 10, 21, 30)
    encoder = AdvertListEncoder(adverts, everyone)
    by_id = {a.device: a for a in adverts}
    for chosen in ([7, 10], [3, 21], [10], []):
        # written out independently: u16 n, n x (u32, cipher_pk, mask_pk); u16 m, m x u32; u16 s, s x (u32, sig)
        want = struct.pack("<H", len(chosen)) + b"".join(
            struct.pack("<I", d) + by_id[d].cipher_pk + by_id[d].mask_pk for d in chosen)
        want += struct.pack(f"<H{len(everyone)}I", len(everyone), *everyone)
        signed = [d for d in sorted(chosen) if by_id[d].signature]
        if signed:
            want += struct.pack("<H", len(signed)) + b"".join(struct.pack("<I", d) + by_id[d].signature
                                                             for d in signed)
        assert encoder.body(chosen) == want
        message = encode_secagg(1, 2, 3, AdvertList(tuple(by_id[d] for d in chosen), everyone))
        assert _body(message) == want
        _, decoded = decode_secagg(message)
        assert decoded.step == Step.ADVERTS and decoded.payload.devices == everyone
        assert decoded.payload.adverts == tuple(by_id[d] for d in chosen)


def test_plain_secagg_advert_list_without_signatures_has_no_trailing_sections():
    adverts = [KeyAdvert(a.device, a.cipher_pk, a.mask_pk) for a in _adverts()]
    body = _body(encode_secagg(1, 2, 3, AdvertList(tuple(adverts))))
    assert len(body) == 2 + len(adverts) * 68


@pytest.mark.parametrize("lengths", [(160, 160, 160), (160, 12, 160), (0, 0), (5,)])
def test_shares_decode_alike_with_equal_and_mixed_ciphertext_lengths(lengths):
    to = {d: bytes([d]) * n for d, n in zip((4, 9, 2), lengths)}
    for payload in (EncryptedShares(5, to), SharesFor(5, to)):
        _, decoded = decode_secagg(encode_secagg(1, 2, 3, payload))
        assert decoded.payload == payload


def _framed_shares(body: bytes) -> bytes:
    return frame_message(Header(Kind.SECAGG, 1, 2, 5), PREFIX.pack(SECAGG_VERSION, Step.SHARES, 3) + body)


def test_a_shares_body_cut_short_or_repeating_a_recipient_is_refused():
    body = _body(encode_secagg(1, 2, 3, EncryptedShares(5, {4: b"a" * 160, 9: b"b" * 160})))
    assert decode_secagg(_framed_shares(body))[1].payload.to[9] == b"b" * 160
    with pytest.raises(WireError, match="body ends|bytes after"):
        decode_secagg(_framed_shares(body[:-1]))
    record = body[2:2 + 6 + 160]
    with pytest.raises(WireError, match="repeat"):
        decode_secagg(_framed_shares(body[:2] + record + record))
