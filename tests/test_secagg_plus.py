"""SecAgg+: O(log n) neighbours on a public random graph, exact sums with dropouts, and the consistency check
that refuses an aggregator telling devices different survivor lists."""
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.launcher import broker_url
from broker.secagg_messages import (
    Confirmation,
    ConfirmRequest,
    Step,
    UnmaskReply,
    UnmaskRequest,
)
from edge_runtime.fed_client import DeviceClient
from edge_runtime.secagg_plus import (
    ConsistencyCheck,
    InconsistentRound,
    MaskingGraph,
    choose_parameters,
)
from edge_runtime.secure_aggregation import FixedPoint, SecAggDevice, SecAggServer
from tests.federation_helpers import initial_weights, run_to_end
from tests.test_secagg_mqtt import Updater, _assert_close, _plain_mean, fixed_delta
from training.federated.aggregator import Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.secagg_round import (
    SecAggAggregator,
    SecAggSettings,
    SecureAggregation,
)

SESSION = 0x5EC


def test_parameters_grow_like_log_n_and_keep_their_bounds():
    ks = {n: choose_parameters(n, dropout=0.3, corrupt=0.05) for n in (100, 1000, 10000)}
    assert ks[1000].k < 100 and ks[10000].k < 1.2 * ks[1000].k  # 1,000 devices: under 100 neighbours each
    p = ks[1000]
    assert 2 <= p.threshold < p.k and p.consistency_threshold > 1000 * 1.05 / 2
    assert choose_parameters(30, 0.3, 0.05).k == 29  # a small fleet: the complete graph is the only safe one
    with pytest.raises(ValueError, match="consistency"):
        choose_parameters(100, dropout=0.6, corrupt=0.1)


def test_the_graph_is_k_regular_symmetric_and_fixed_by_its_seed():
    devices = tuple(range(1, 41))
    g = MaskingGraph(devices, 8, seed=7)
    assert all(len(g.neighbours(d)) == 8 and d not in g.neighbours(d) for d in devices)
    assert all(a in g.neighbours(b) for a in devices for b in g.neighbours(a))
    assert g.neighbours(1) == MaskingGraph(devices, 8, seed=7).neighbours(1)
    assert any(g.neighbours(d) != MaskingGraph(devices, 8, seed=8).neighbours(d) for d in devices)
    with pytest.raises(ValueError, match="even"):
        MaskingGraph(devices, 7, seed=1)


def _fleet(n, k, t, consistency_threshold=None):
    ids = list(range(1, n + 1))
    graph = MaskingGraph(tuple(ids), k, SESSION)
    keys = {i: Ed25519PrivateKey.generate() for i in ids}
    directory = {i: key.public_key() for i, key in keys.items()}
    fixed = FixedPoint(bound=1.0, scale=2.0**16, max_devices=n)

    def check(i):
        return None if consistency_threshold is None else ConsistencyCheck(i, SESSION, keys[i], directory,
                                                                          consistency_threshold)
    devices = {i: SecAggDevice(i, t, fixed, graph, check(i)) for i in ids}
    return devices, graph, fixed


def _masked(devices, graph, fixed, t, drop_before=(), seed=0):
    rng = np.random.default_rng(seed)
    adverts = [d.advertise() for d in devices.values()]
    shares = [d.share_keys(adverts) for d in devices.values()]
    for d in devices.values():
        d.receive_shares(shares)
    assert all(len(m.to) == graph.k for m in shares)  # each device sent k shares, not n - 1
    updates = {i: rng.uniform(-0.5, 0.5, 300) for i in devices}
    shared = sorted(devices)
    inputs = [devices[i].masked_input(updates[i], shared) for i in devices if i not in drop_before]
    server = SecAggServer(t, 300, fixed, {a.device: a for a in adverts}, graph)
    return updates, shared, inputs, server


def test_sums_are_exact_with_dropouts_before_and_after_the_masked_input():
    n, k, t = 40, 8, 3
    devices, graph, fixed = _fleet(n, k, t, consistency_threshold=21)
    before, after = (4, 17, 30), (2, 9, 22, 35)  # 7 % drop before sending an input, 10 % after it
    updates, shared, inputs, server = _masked(devices, graph, fixed, t, drop_before=before)
    arrived = sorted(m.device for m in inputs)
    dropped = sorted(set(shared) - set(arrived))
    signatures = {i: devices[i].confirm(arrived) for i in arrived}  # the consistency round
    replies = [devices[i].unmask(arrived, dropped, signatures) for i in arrived if i not in after]
    total = server.sum(shared, inputs, replies)
    want = sum(fixed.decode_sum(fixed.encode(updates[i])) for i in arrived)  # late devices' inputs still count
    np.testing.assert_allclose(total, want, atol=1e-9)
    single = fixed.decode_sum(inputs[0].vector)
    assert abs(np.corrcoef(single, updates[inputs[0].device])[0, 1]) < 0.2  # one masked input: noise


def test_an_aggregator_telling_devices_different_survivor_lists_is_refused():
    n, k, t = 20, 6, 2
    devices, graph, fixed = _fleet(n, k, t, consistency_threshold=11)
    _, _, inputs, _ = _masked(devices, graph, fixed, t)
    victim = 5
    full = sorted(m.device for m in inputs)
    without = [d for d in full if d != victim]  # claiming the victim dropped reveals its mask key...
    told_full = [d for d in full if d <= 10]  # ...to the devices shown this list, while the others unmask its seed
    signatures = {i: devices[i].confirm(full if i in told_full else without) for i in full}
    on_full = {i: s for i, s in signatures.items() if i in told_full}
    on_without = {i: s for i, s in signatures.items() if i not in told_full}
    for i in told_full:  # 10 signatures over the full list, 11 needed: no share of the victim's seed
        with pytest.raises(InconsistentRound, match="valid signatures"):
            devices[i].unmask(full, [], on_full)
    for i in without:
        with pytest.raises(InconsistentRound):
            devices[i].unmask(without, [victim], signatures)  # the 10 signatures over it + 10 over the other list
    with pytest.raises(InconsistentRound, match="other survivors"):
        devices[1].unmask(without, [victim], on_without)  # device 1 signed the full list
    with pytest.raises(InconsistentRound, match="second"):
        devices[1].confirm(without)  # and signs only one list per session


# ---------------------------------------------------------------------------------------------- over MQTT
class _Silent(DeviceClient):
    """Drops out right after its masked input: it neither confirms nor unmasks."""

    def _send_secagg(self, outgoing: list) -> None:
        super()._send_secagg([o for o in outgoing if not isinstance(o[2], (UnmaskReply, Confirmation))])


def _secure_fleet(url, run_dir, fleet, n, silent, settings, mode=None, devices_out=None):
    registry = {f"d{k:02d}": k + 1 for k in range(n)}
    keys = {name: Ed25519PrivateKey.generate() for name in [*registry, "aggregator"]}
    directory = {i: keys[name].public_key() for name, i in registry.items()}  # registered out of band
    devices = [(_Silent if k in silent else DeviceClient)(
        name, dev_id, fleet, url, Updater(k), signing_key=keys[name], aggregator_key=keys["aggregator"].public_key(),
        noise_seed=k, peer_keys=directory) for k, (name, dev_id) in enumerate(registry.items())]
    cfg = AggregatorConfig(fleet=fleet, devices=registry, rounds=1, policy=RoundPolicy(deadline_s=6),
                           device_keys={d: keys[d].public_key() for d in registry})
    if mode is None:
        aggregator = SecAggAggregator(cfg, initial_weights(), url, run_dir, secagg=settings,
                                      signing_key=keys["aggregator"])
    else:
        aggregator = Aggregator(cfg, initial_weights(), url, run_dir, signing_key=keys["aggregator"], mode=mode)
    if devices_out is not None:
        devices_out.extend(devices)
    return run_to_end(aggregator, devices), aggregator


@pytest.mark.integration
def test_secagg_plus_over_mosquitto_sums_exactly_with_dropouts_and_confirms(mosquitto, tmp_path):
    n, silent = 12, (3, 8)  # two devices drop after their masked input
    result, aggregator = _secure_fleet(broker_url(mosquitto), tmp_path, "sa-plus", n, silent,
                                       SecAggSettings(degree=4, threshold_fraction=0.5))
    sa = result.history[0]["secagg"]
    assert (sa["degree"], sa["threshold"], sa["failed"], sa["inputs"]) == (4, 2, None, n)
    # the round goes on once the confirmations reach the consistency threshold and cover every neighbourhood
    assert sa["consistency"] == 7 and 7 <= sa["confirms"] <= n - len(silent)
    want = [w + m for w, m in zip(initial_weights(), _plain_mean(range(n)))]  # the silent devices' inputs count
    _assert_close(result.final_weights, want, atol=n / aggregator._state.plan.scale + 1e-6)
    assert result.rejected == {}


class _LyingAggregation(SecureAggregation):
    """An actively malicious aggregator: it tells the devices with ids up to half the fleet that the victim's
    masked input arrived (so that they reveal the victim's self-mask seed) and the others that the victim
    dropped (so that they reveal its mask key): with both, the victim's input would be unmasked on its own."""

    def __init__(self, settings: SecAggSettings, victim: int) -> None:
        super().__init__(settings)
        self.victim, self.told = victim, {}

    def announce(self, service, step) -> None:
        st = self.state
        if step not in (Step.MASKED_INPUT, Step.CONFIRM):
            return super().announce(service, step)
        full = tuple(sorted(st.inputs))
        without = tuple(d for d in full if d != self.victim)
        signatures = {i: c.signature for i, c in st.confirms.items()}  # all of them, over either list
        names = {v: k for k, v in service.cfg.devices.items()}
        for device in full:
            arrived, dropped = (full, ()) if device <= len(full) // 2 else (without, (self.victim,))
            self.told[device] = arrived
            self.send(service, ConfirmRequest(arrived) if step == Step.MASKED_INPUT
                      else UnmaskRequest(arrived, dropped, signatures), names[device])


@pytest.mark.integration
def test_an_aggregator_telling_devices_different_dropout_sets_over_mosquitto_is_refused(mosquitto, tmp_path, caplog):
    n, victim = 12, 2
    settings = SecAggSettings(degree=4, threshold_fraction=0.5)
    lying = _LyingAggregation(settings, victim)
    with caplog.at_level("WARNING", logger="edge_runtime.secagg_client"):
        result, _ = _secure_fleet(broker_url(mosquitto), tmp_path, "sa-lying", n, (), settings,
                                  mode=lying)
    sa = result.history[0]["secagg"]
    assert sa["inputs"] == n and sa["consistency"] == 7  # every masked input arrived, the victim's too
    assert sa["confirms"] >= 7  # each device signed the one list it was shown: at most 6 signed either list
    assert {len(v) for v in lying.told.values()} == {n, n - 1}
    assert sa["unmask_replies"] == 0 and sa["failed"].startswith("UNMASK")  # not one share revealed
    refusals = [r for r in caplog.records if "refusing to unmask" in r.getMessage()]
    assert len(refusals) == n and all("valid signatures" in r.getMessage() for r in refusals)
    assert result.history[0]["participants"] == 0  # nothing decoded: the model is unchanged
    _assert_close(result.final_weights, initial_weights(), atol=0)


@pytest.mark.integration
def test_devices_that_sample_themselves_hide_who_counted_and_earn_amplification(mosquitto, tmp_path):
    from itertools import combinations

    from training.federated.accountant import RoundCharge, Sampling, epsilon_of_charges

    n, q = 6, 0.5
    url = broker_url(mosquitto)
    result, aggregator = _secure_fleet(url, tmp_path / "a", "sa-poisson", n, (), SecAggSettings(poisson_rate=q))
    assert result.history[0]["secagg"]["inputs"] == n  # every device sent a masked input...
    total = [(w - w0) * q * n for w, w0 in zip(result.final_weights, initial_weights())]  # the decoded sum
    atol = 2 * n / aggregator._state.plan.scale + 1e-5
    matches = [ks for r in range(n + 1) for ks in combinations(range(n), r)
               if all(np.allclose(t, sum((fixed_delta(k)[i] for k in ks), np.zeros_like(t)), atol=atol)
                      for i, t in enumerate(total))]
    assert len(matches) == 1  # ...and the sum is that of the subset whose coins came up (which: only the sum says)

    z, clip = 2.0, 1.0
    result, _ = _secure_fleet(url, tmp_path / "b", "sa-poisson-dp", n, (),
                              SecAggSettings(poisson_rate=q, noise_multiplier=z, clip=clip))
    row = result.history[0]["privacy"]
    z_eff = z * np.sqrt(n / result.history[0]["secagg"]["threshold"])
    assert row["sampling"] == "device_poisson" and row["sampling_rate"] == q
    assert row["epsilon_rdp"] == pytest.approx(
        epsilon_of_charges([RoundCharge(1, z_eff, Sampling.DEVICE_POISSON, q)], 1e-6))
    assert row["epsilon_rdp"] < epsilon_of_charges([RoundCharge(1, z_eff)], 1e-6)  # amplified


def test_a_device_left_out_by_its_coin_sends_only_noise():
    from broker.secagg_messages import SecAggPlan
    from edge_runtime.secagg_client import prepare_input, private_coin

    plan = SecAggPlan(1, 2, 4, 4.0, 2.0**20, clip=1.0, noise_sd=0.5, sampling_rate=0.3)
    update = np.full(20000, 0.01)
    left_out = prepare_input(update, plan, np.random.default_rng(0), sampled=False)
    assert abs(left_out.mean()) < 5 * 0.5 / np.sqrt(20000) and np.std(left_out) == pytest.approx(0.5, rel=0.02)
    kept = prepare_input(update, plan, np.random.default_rng(0), sampled=True)
    assert kept.mean() == pytest.approx(0.01, abs=5 * 0.5 / np.sqrt(20000))
    share = np.mean([private_coin(0.3) for _ in range(10000)])
    assert abs(share - 0.3) < 0.025  # 5 standard deviations
