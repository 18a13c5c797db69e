"""Byzantine-robust strategies on hand-made updates: attackers cannot move the result far."""
import numpy as np
import pytest

from training.federated.registry import make_strategy
from training.federated.robust import CosineFilter, Krum, NormBounded, clip_delta, flatten
from training.federated.strategies import ClientUpdate

G = [np.zeros((2, 2), np.float32), np.zeros(3, np.float32)]


def _honest(k, value=1.0):
    rng = np.random.default_rng(k)
    return ClientUpdate(f"h{k}", [np.full((2, 2), value, np.float32) + 0.01 * rng.normal(size=(2, 2)).astype(np.float32),
                                  np.full(3, value, np.float32)], 10)


def _attacker(k, scale=-100.0):
    return ClientUpdate(f"a{k}", [np.full((2, 2), scale, np.float32), np.full(3, scale, np.float32)], 10)


@pytest.mark.parametrize("name, args", [("median", {}), ("trimmed_mean", {"trim": 0.3}),
                                        ("krum", {"byzantine": 2}), ("krum", {"byzantine": 2, "multi": 3}),
                                        ("cosine_filter", {"byzantine": 2})])
def test_two_sign_flipping_attackers_out_of_seven_do_not_move_the_model(name, args):
    updates = [_honest(k) for k in range(5)] + [_attacker(0), _attacker(1)]
    new = make_strategy(name, **args).aggregate(G, updates)
    assert np.allclose(flatten(new), 1.0, atol=0.05), flatten(new)
    fedavg = make_strategy("fedavg").aggregate(G, updates)
    assert flatten(fedavg).mean() < -20  # the undefended baseline is wrecked


def test_median_and_trimmed_mean_by_hand():
    ups = [ClientUpdate(str(v), [np.array([v], np.float32)], 1) for v in (1.0, 2.0, 3.0, 100.0, -50.0)]
    assert make_strategy("median").aggregate([np.zeros(1, np.float32)], ups)[0][0] == 2.0
    assert make_strategy("trimmed_mean", trim=0.2).aggregate([np.zeros(1, np.float32)], ups)[0][0] == 2.0


def test_krum_scores_by_hand():
    v = np.array([[0.0], [1.0], [2.0], [10.0]])
    # byzantine=1 -> each point sums its n - f - 2 = 1 nearest squared distances
    np.testing.assert_array_equal(Krum(byzantine=1).scores(v), [1.0, 1.0, 1.0, 64.0])


def test_norm_bounding_clips_long_updates_only():
    long_, short = [np.array([3.0, 4.0], np.float32)], [np.array([0.3, 0.4], np.float32)]
    assert np.allclose(clip_delta(long_, 1.0)[0], [0.6, 0.8])
    assert np.allclose(clip_delta(short, 1.0)[0], [0.3, 0.4])
    ups = [ClientUpdate("a", long_, 1), ClientUpdate("b", short, 1)]
    assert np.allclose(NormBounded(clip=1.0).aggregate([np.zeros(2, np.float32)], ups)[0], [0.45, 0.6])
    with pytest.raises(ValueError):
        NormBounded(clip=0)


def test_norm_bounding_by_default_clips_to_the_rounds_median_norm():
    # norms 1, 2, 3 (honest) and 50 (boosted attacker): the median norm is 2.5, so only 3 and 50 are clipped
    ups = [ClientUpdate(str(n), [np.array([n, 0.0], np.float32)], 1) for n in (1.0, 2.0, 3.0, 50.0)]
    new = NormBounded().aggregate([np.zeros(2, np.float32)], ups)[0]
    assert np.allclose(new, [(1.0 + 2.0 + 2.5 + 2.5) / 4, 0.0])
    assert np.allclose(NormBounded(clip=10.0).aggregate([np.zeros(2, np.float32)], ups)[0], [(1 + 2 + 3 + 10) / 4, 0])


def test_cosine_filter_by_hand():
    # median [0.5, 0.5]; cosines 1, 0.707, 0.707 (honest) and -1 (flipped): the flipped one goes; median norm
    # (√2 + 2) / 2 clips [2, 0] and [0, 3] to that length; the mean of [1, 1], [1.707, 0], [0, 1.707] is 0.902 each
    ups = [ClientUpdate(n, [np.array(v, np.float32)], 1) for n, v in
           (("h1", [1.0, 1.0]), ("h2", [2.0, 0.0]), ("h3", [0.0, 3.0]), ("a", [-1.0, -1.0]))]
    bound = (np.sqrt(2) + 2) / 2
    new = CosineFilter(byzantine=1).aggregate([np.zeros(2, np.float32)], ups)[0]
    np.testing.assert_allclose(new, [(1 + bound) / 3] * 2, rtol=1e-6)
    rows = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 3.0], [-1.0, -1.0]])
    np.testing.assert_allclose(CosineFilter().agreement(rows), [1.0, np.sqrt(0.5), np.sqrt(0.5), -1.0], atol=1e-12)
    # a zero median (here with a zero row added) gives no direction: every cosine is 0, no division by zero
    np.testing.assert_array_equal(CosineFilter().agreement(np.vstack([rows, [0.0, 0.0]])), np.zeros(5))


def test_cosine_filter_keeps_a_boosted_aligned_delta_only_at_the_median_norm():
    # all four point the same way; byzantine=0 keeps them all, the 50-long one is clipped to the median norm 2.5
    ups = [ClientUpdate(str(n), [np.array([n, 0.0], np.float32)], w) for n, w in ((1.0, 1), (2.0, 1), (3.0, 1),
                                                                                 (50.0, 2))]
    new = CosineFilter(byzantine=0).aggregate([np.zeros(2, np.float32)], ups)[0]
    np.testing.assert_allclose(new, [(1.0 + 2.0 + 2.5 + 2 * 2.5) / 5, 0.0], rtol=1e-6)
    with pytest.raises(ValueError):
        CosineFilter(byzantine=-1)


def test_cosine_filter_with_memory_drops_the_device_whose_history_disagrees():
    def round_(**deltas):
        return [ClientUpdate(n, [np.array(v, np.float32)], 1) for n, v in deltas.items()]

    g = [np.zeros(2, np.float32)]
    first = round_(a=[1.0, 1.0], b=[2.0, 0.0], c=[0.0, 3.0], x=[-1.0, -1.0])  # cosines 1, .707, .707, -1
    # round 2: the median is [1, 1]; x now agrees (cosine 1) and c does not (cosine 0); all norms are √2
    second = round_(a=[1.0, 1.0], b=[1.0, 1.0], c=[1.0, -1.0], x=[1.0, 1.0])
    plain, trusting = CosineFilter(byzantine=1), CosineFilter(byzantine=1, memory=0.5)
    for s in (plain, trusting):
        s.aggregate(g, first)
    np.testing.assert_allclose(plain.aggregate(g, second)[0], [1.0, 1.0])  # this round alone: c goes, x stays
    # trust a 1, b (.707 + 1) / 2, c (.707 + 0) / 2, x (-1 + 1) / 2 = 0: x goes, the mean of a, b, c is [1, 1/3]
    np.testing.assert_allclose(trusting.aggregate(g, second)[0], [1.0, 1 / 3], rtol=1e-6)
    assert trusting.trust == pytest.approx({"a": 1.0, "b": (np.sqrt(0.5) + 1) / 2, "c": np.sqrt(0.5) / 2, "x": 0.0})
    restored = CosineFilter(byzantine=1, memory=0.5)
    restored.load_state(trusting.state())  # the trust table survives an aggregator restart
    assert restored.trust == trusting.trust and plain.state()["trust_devices"][0].size == 0
    with pytest.raises(ValueError):
        CosineFilter(memory=1.0)


def test_cosine_filter_trust_survives_the_aggregator_checkpoint_file(tmp_path):
    from training.federated import checkpoint

    s = CosineFilter(byzantine=1, memory=0.9)
    s.trust = {"bed-1": 0.5, "bed-2": -0.25}
    checkpoint.save(tmp_path / "agg.npz", {}, {f"state.{k}": v for k, v in s.state().items()})
    _, arrays = checkpoint.load(tmp_path / "agg.npz")
    restored = CosineFilter(byzantine=1, memory=0.9)
    restored.load_state({k: arrays.get(f"state.{k}") for k in s.state()})
    assert restored.trust == {"bed-1": 0.5, "bed-2": -0.25}
