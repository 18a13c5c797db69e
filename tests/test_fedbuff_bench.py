"""The FedBuff bench's delay model and targets (the runs themselves are the bench's, not the suite's)."""
import pytest

from tools.fedbuff_bench import SlowDevices, fedbuff_targets

NAMES = tuple(f"dev{k:03d}" for k in range(20))


def test_slow_devices_are_the_configured_share_and_take_the_factor_longer_deterministically():
    delays = SlowDevices(NAMES, slow_fraction=0.3, slow_factor=5.0, base_s=10.0, jitter=0.0, seed=4)
    assert len(delays.slow) == 6
    assert {delays(n, 3) for n in delays.slow} == {50.0}
    assert {delays(n, 3) for n in set(NAMES) - delays.slow} == {10.0}
    jittered = SlowDevices(NAMES, seed=4)
    assert jittered("dev001", 2) == jittered("dev001", 2) != jittered("dev001", 3)
    assert SlowDevices(NAMES, seed=5).slow != delays.slow
    with pytest.raises(ValueError):
        SlowDevices(NAMES, slow_fraction=1.5)


def _run(ratio, sync_wall=100.0):
    reached = ratio is not None
    return {"wall_time_ratio": ratio,
            "sync": {"final_val_macro_f1": 0.5, "wall_s": sync_wall, "device_updates": 170,
                     "curve": [{"sim_time": 50.0, "val_macro_f1": 0.5}, {"sim_time": 100.0, "val_macro_f1": 0.5}]},
            "fedbuff": {"wall_s_to_target": ratio * sync_wall if reached else None,
                        "wall_s_to_sustained_target": ratio * sync_wall if reached else None,
                        "device_updates_to_target": 40 if reached else None}}


def test_the_wall_time_target_needs_every_seed_to_reach_the_f1_within_half_the_synchronous_time():
    met = fedbuff_targets([_run(0.2), _run(0.4), _run(0.3)])[0]
    assert met["mean"] == pytest.approx(0.3) and met["met"] is True and met["reached_seeds"] == 3
    assert fedbuff_targets([_run(0.2), _run(0.9), _run(0.7)])[0]["met"] is False
    assert fedbuff_targets([_run(0.2), _run(None), _run(0.3)])[0]["met"] is False  # one seed never got there
    slow_seed = fedbuff_targets([_run(0.05), _run(0.12), _run(0.7)])[0]  # the mean (0.29) is not enough
    assert slow_seed["mean"] == pytest.approx(0.29) and slow_seed["met"] is False
    # reported beside it: the synchronous run itself touched its final F1 halfway through
    rows = {t["target"]: t for t in fedbuff_targets([_run(0.2)])}
    assert rows["synchronous FedAvg's own first round at its final val macro F1, / its whole run's wall time "
                "(reported)"]["mean"] == pytest.approx(0.5)
    assert rows["FedBuff wall time to target / the synchronous run's time to first reach it (reported)"]["mean"] == \
        pytest.approx(0.4)


def _swept(first: dict[str, float | None], held: dict[str, float | None] | None = None) -> dict:
    held = held or first
    return {"candidates": {name: {"ratio_to_target": v, "ratio_to_sustained": held[name], "best_val_macro_f1": 0.5,
                                  "rejected_stale": 0} for name, v in first.items()}}


def test_the_sweep_rule_prefers_every_seed_reached_then_held_then_the_best_worst_seed_then_the_mean():
    from tools.fedbuff_sweep import CANDIDATES, choose

    a, b, c = list(CANDIDATES)[:3]
    runs = [_swept({a: 0.05, b: 0.30, c: 0.20}), _swept({a: 0.10, b: 0.30, c: 0.25}),
            _swept({a: None, b: 0.30, c: 0.35}, {a: None, b: None, c: 0.35})]
    ranking = choose(runs, [a, b, c], cap=0.5)
    assert [r["candidate"] for r in ranking] == [c, b, a]  # a is fastest where it reaches, but misses a seed;
    assert ranking[0]["seeds_held"] == 3 and ranking[1]["seeds_held"] == 2  # b reaches every seed, holds two
    assert ranking[1]["worst_ratio"] == pytest.approx(0.30) and ranking[1]["seeds_reached"] == 3
    assert ranking[2]["worst_ratio"] == 0.5 and ranking[2]["mean_ratio"] == pytest.approx(0.65 / 3)
    tie = choose([_swept({a: 0.2, b: 0.3}), _swept({a: 0.3, b: 0.1})], [a, b], cap=0.5)
    assert [r["candidate"] for r in tie] == [b, a]  # same worst seed (0.3): the smaller mean wins


def test_sweep_files_of_the_same_seed_merge_their_candidates():
    from tools.fedbuff_sweep import merge_runs

    one = {"seed": 2, "sync_final_val_macro_f1": 0.46, "candidates": {"x": 1}}
    two = {"seed": 2, "sync_final_val_macro_f1": 0.46, "candidates": {"y": 2}}
    merged = merge_runs([two, {"seed": 0, "sync_final_val_macro_f1": 0.3, "candidates": {"x": 3}}, one])
    assert [r["seed"] for r in merged] == [0, 2] and merged[1]["candidates"] == {"x": 1, "y": 2}
    with pytest.raises(ValueError):
        merge_runs([one, {**two, "sync_final_val_macro_f1": 0.5}])
