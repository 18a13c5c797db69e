"""SecAgg+ with per-device advert lists (O(k) download): each device is sent only its neighbours' keys and the
list of advertisers, derives its neighbourhood from the public graph itself, and refuses a list that is not
exactly that neighbourhood or whose keys are not signed by their devices; sums stay exact with dropouts
before and after the masked input, and the consistency check also binds the advertiser list."""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from broker.fed_messages import fleet_id
from broker.secagg_messages import (
    AdvertList,
    Confirmation,
    ConfirmRequest,
    SecAggMessage,
    SecAggPlan,
    SharesFor,
    UnmaskReply,
    UnmaskRequest,
    decode_secagg,
    encode_secagg,
)
from edge_runtime.secagg_client import SecAggParticipant
from edge_runtime.secagg_plus import ConsistencyCheck, InconsistentRound, graph_for
from edge_runtime.secure_aggregation import FixedPoint, SecAggServer

ROUND, SIZE, FID = 1, 200, fleet_id("sa-plus-adverts")
PLAN = SecAggPlan(0xAD5, threshold=3, devices=30, bound=1.0, scale=2.0**16, degree=8, consistency=17,
                  members=tuple(range(1, 31)))


def _wire(payload) -> SecAggMessage:
    """An aggregator message as a device decodes it from the wire (the per-device list's bytes included)."""
    return decode_secagg(encode_secagg(FID, ROUND, PLAN.session, payload))[1]


def _fleet(n: int = 30) -> dict[int, SecAggParticipant]:
    keys = {i: Ed25519PrivateKey.generate() for i in range(1, n + 1)}
    directory = {i: k.public_key() for i, k in keys.items()}
    return {i: SecAggParticipant(i, np.random.default_rng(i), keys[i], directory) for i in keys}


def _flat(i: int) -> np.ndarray:
    return np.random.default_rng(100 + i).uniform(-0.5, 0.5, SIZE)


def _advertise(parts):
    adverts = {i: p.begin(ROUND, PLAN)[2] for i, p in parts.items()}
    everyone = tuple(sorted(adverts))
    return adverts, everyone, graph_for(list(PLAN.members), PLAN.degree, PLAN.session)


def _only(out: list) -> object:
    assert len(out) == 1, out
    return out[0][2]


def test_per_device_advert_lists_sum_exactly_with_dropouts_before_and_after_the_input():
    parts = _fleet()
    adverts, everyone, graph = _advertise(parts)
    before, after = {4, 17}, {9, 22, 25}  # no masked input / silent after it
    shares = {}
    for j, p in parts.items():  # what SecureAggregation.announce sends each device under SecAgg+
        near = tuple(adverts[i] for i in sorted(graph.neighbours(j)))
        assert len(encode_secagg(FID, ROUND, PLAN.session, AdvertList(near, everyone))) < 140 * PLAN.degree + 4 * 30 + 64  # k signed adverts
        shares[j] = _only(p.on_message(ROUND, _wire(AdvertList(near, everyone))))
        assert set(shares[j].to) == graph.neighbours(j)  # k shares, each to a neighbour
    inputs = {}
    for j, p in parts.items():
        if j not in before:
            p.set_update(ROUND, _flat(j))
        out = p.on_message(ROUND, _wire(SharesFor(j, {i: m.to[j] for i, m in shares.items() if j in m.to})))
        inputs.update({o[2].device: o[2] for o in out})
    assert set(inputs) == set(parts) - before
    arrived, dropped = tuple(sorted(inputs)), tuple(sorted(before))
    confirms = {c.device: c.signature for i in arrived
                if i not in after for c in [_only(parts[i].on_message(ROUND, _wire(ConfirmRequest(arrived))))]
                if isinstance(c, Confirmation)}
    assert len(confirms) == 30 - len(before) - len(after) >= PLAN.consistency
    request = _wire(UnmaskRequest(arrived, dropped, confirms))
    replies = [_only(parts[i].on_message(ROUND, request)) for i in arrived if i not in after]
    assert all(isinstance(r, UnmaskReply) for r in replies)
    fixed = FixedPoint(PLAN.bound, PLAN.scale, PLAN.devices)
    total = SecAggServer(PLAN.threshold, SIZE, fixed, adverts, graph).sum(sorted(shares), list(inputs.values()),
                                                                           replies)
    want = sum(fixed.decode_sum(fixed.encode(_flat(i))) for i in arrived)  # late devices' inputs still count
    np.testing.assert_allclose(total, want, atol=1e-9)


@pytest.mark.parametrize("tamper", ["non-neighbour", "missing-neighbour", "substituted-key"])
def test_a_device_refuses_adverts_that_are_not_its_neighbourhood(tamper, caplog):
    parts = _fleet()
    adverts, everyone, graph = _advertise(parts)
    victim = 1
    near = sorted(graph.neighbours(victim))
    if tamper == "non-neighbour":  # e.g. an aggregator steering the victim's shares to a device of its choice
        listed = near + [min(set(everyone) - set(near) - {victim})]
    else:
        listed = near if tamper == "substituted-key" else near[1:]
    sent = [adverts[i] for i in listed]
    if tamper == "substituted-key":  # the aggregator's own key in a neighbour's place, signature left as it was
        sent[0] = replace(sent[0], cipher_pk=X25519PrivateKey.generate().public_key().public_bytes_raw())
    with caplog.at_level(logging.WARNING):
        out = parts[victim].on_message(ROUND, _wire(AdvertList(tuple(sent), everyone)))
    assert out == [] and parts[victim].refused == 1  # nothing shared
    assert "refusing the adverts" in caplog.text and {"non-neighbour": "non-neighbours", "missing-neighbour": "missing",
                                                      "substituted-key": "not signed"}[tamper] in caplog.text
    honest = AdvertList(tuple(adverts[i] for i in near), everyone)
    assert set(_only(parts[victim].on_message(ROUND, _wire(honest))).to) == set(near)  # the true one is accepted


def test_signatures_bind_the_advertiser_list():
    """Signatures over one survivor list from devices shown different advertiser lists (hence graphs) do not
    pool: each device counts only signatures made over the list it saw, so an aggregator showing part of the
    fleet another graph cannot collect the threshold from both parts."""
    n, threshold = 30, 17
    keys = {i: Ed25519PrivateKey.generate() for i in range(1, n + 1)}
    directory = {i: k.public_key() for i, k in keys.items()}
    everyone, forged = tuple(range(1, n + 1)), tuple(range(1, n))  # device 30 hidden from devices 1..15
    checks = {i: ConsistencyCheck(i, PLAN.session, keys[i], directory, threshold,
                                  advertisers=forged if i <= 15 else everyone) for i in everyone}
    survivors = list(range(1, n))
    signatures = {i: checks[i].sign(survivors) for i in survivors}  # 29 signatures over the same survivors
    for i in (3, 20):  # 15 (or 14) of them over this device's view: below 17
        with pytest.raises(InconsistentRound, match="valid signatures"):
            checks[i].verify(survivors, signatures)
    same_view = ConsistencyCheck(40, PLAN.session, keys[1], directory, threshold=15, advertisers=forged)
    same_view.signed = frozenset(survivors)
    same_view.verify(survivors, signatures)  # the 15 over its own view count


def test_the_graph_comes_from_the_published_selection_not_from_who_advertised():
    """A selected device that never advertises does not change anyone's neighbourhood (the graph is a function
    of the signed plan's members and session): its neighbours share with their other neighbours, treat it as
    a dropout, and the sum is exact."""
    parts = _fleet()
    silent = 30
    adverts, _, graph = _advertise(parts)
    del adverts[silent], parts[silent]
    everyone = tuple(sorted(adverts))
    shares = {}
    for j, p in parts.items():
        near = tuple(adverts[i] for i in sorted(graph.neighbours(j)) if i in adverts)
        shares[j] = _only(p.on_message(ROUND, _wire(AdvertList(near, everyone))))
        assert set(shares[j].to) == graph.neighbours(j) - {silent}  # same graph, the silent device left out
    assert any(silent in graph.neighbours(j) for j in parts)  # the case is exercised
    inputs = {}
    for j, p in parts.items():
        p.set_update(ROUND, _flat(j))
        out = p.on_message(ROUND, _wire(SharesFor(j, {i: m.to[j] for i, m in shares.items() if j in m.to})))
        inputs.update({o[2].device: o[2] for o in out})
    arrived = tuple(sorted(inputs))
    confirms = {i: _only(parts[i].on_message(ROUND, _wire(ConfirmRequest(arrived)))).signature for i in arrived}
    request = _wire(UnmaskRequest(arrived, (), confirms))
    replies = [_only(parts[i].on_message(ROUND, request)) for i in arrived]
    fixed = FixedPoint(PLAN.bound, PLAN.scale, PLAN.devices)
    total = SecAggServer(PLAN.threshold, SIZE, fixed, adverts, graph).sum(sorted(shares), list(inputs.values()),
                                                                           replies)
    np.testing.assert_allclose(total, sum(fixed.decode_sum(fixed.encode(_flat(i))) for i in arrived), atol=1e-9)
