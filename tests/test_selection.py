"""Device selection policies on hand-made statuses (training/federated/selection.py)."""
from __future__ import annotations

import numpy as np
import pytest

from training.federated.selection import (POLICIES, DeviceStatus, Oort, fairness_report, make_policy,
                                          reliability_from_counts, weighted_sample)


def _fleet(n: int = 10, **common) -> list[DeviceStatus]:
    return [DeviceStatus(device=f"d{i:02d}", **common) for i in range(n)]


def _counts(policy, statuses, k: int, rounds: int = 300, seed: int = 0) -> dict[str, int]:
    picks = [policy.select(statuses, k, r, seed) for r in range(rounds)]
    return fairness_report(picks, [s.device for s in statuses]).counts


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_respects_consent_online_and_k(name):
    statuses = _fleet(8) + [DeviceStatus("no-consent", consent=False), DeviceStatus("away", online=False)]
    policy = make_policy(name)
    for r in range(20):
        chosen = policy.select(statuses, 3, r, seed=1)
        assert len(chosen) == 3 and len(set(chosen)) == 3
        assert "no-consent" not in chosen and "away" not in chosen
    assert policy.select(statuses, 50, 0, seed=1) == sorted(s.device for s in statuses[:8])


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_is_deterministic_for_a_seed(name):
    statuses = [DeviceStatus(f"d{i}", battery_pct=30 + 7 * i, reliability=0.1 + 0.08 * i,
                             statistical_utility=1.0 + i % 2 if i % 3 else None) for i in range(10)]
    policy = make_policy(name)
    first = [policy.select(statuses, 4, r, seed=7) for r in range(10)]
    assert first == [policy.select(statuses, 4, r, seed=7) for r in range(10)]
    assert first != [policy.select(statuses, 4, r, seed=8) for r in range(10)]


def test_uniform_is_even_over_many_rounds():
    statuses = _fleet(10)
    report = fairness_report([make_policy("uniform").select(statuses, 3, r, 0) for r in range(300)],
                             [s.device for s in statuses])
    assert report.never_chosen == 0 and sum(report.counts.values()) == 900
    assert report.jain_index > 0.97


def test_power_aware_skips_flat_batteries_and_prefers_charging():
    statuses = [DeviceStatus("flat", battery_pct=10), DeviceStatus("flat-charging", battery_pct=5, charging=True),
                DeviceStatus("low", battery_pct=35)] + _fleet(5, battery_pct=60)
    counts = _counts(make_policy("power-aware", min_battery_pct=30), statuses, 2)
    assert counts["flat"] == 0
    assert counts["flat-charging"] > counts["low"] > 0


def test_reliability_weighted_asks_unreliable_devices_less_but_still_asks():
    statuses = [DeviceStatus("reliable", reliability=0.95), DeviceStatus("flaky", reliability=0.1)] + \
        _fleet(6, reliability=0.5)
    counts = _counts(make_policy("reliability-weighted"), statuses, 2, rounds=600)
    assert counts["reliable"] > 2 * counts["d00"] > 4 * counts["flaky"] > 0


def test_reliability_from_counts_is_laplace_smoothed():
    assert reliability_from_counts(0, 0) == 0.5
    assert reliability_from_counts(3, 3) == pytest.approx(0.8)
    assert reliability_from_counts(0, 8) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        reliability_from_counts(4, 3)


def test_oort_exploits_utility_penalises_slow_devices_and_explores():
    statuses = [DeviceStatus("best", statistical_utility=10.0, round_seconds=10),
                DeviceStatus("good", statistical_utility=9.8, round_seconds=10),
                DeviceStatus("best-but-slow", statistical_utility=12.0, round_seconds=300),
                DeviceStatus("poor", statistical_utility=1.0, round_seconds=10)] + \
        [DeviceStatus(f"new{i}") for i in range(4)]
    no_explore = Oort(explore=0.0)
    assert no_explore.select(statuses, 2, 1, seed=0) == ["best", "good"]
    # system utility: (30 / 300)^2 = 0.01 of 12
    assert no_explore.utility(statuses[2], 1) == pytest.approx(0.12)
    half = Oort(explore=0.5).select(statuses, 4, 1, seed=0)
    assert sum(d.startswith("new") for d in half) == 2 and {"best", "good"} <= set(half)


def test_oort_age_bonus_brings_back_devices_not_chosen_lately():
    s = DeviceStatus("old", statistical_utility=1.0, last_selected_round=1)
    assert Oort().utility(s, 50) > Oort().utility(DeviceStatus("x", statistical_utility=1.0), 50) == 1.0


def test_fairness_report_jain_index_by_hand():
    report = fairness_report([["a"], ["a"]], ["a", "b"])
    assert report.counts == {"a": 2, "b": 0} and report.never_chosen == 1
    assert report.jain_index == pytest.approx(0.5)  # (2)^2 / (2 * 4)
    assert fairness_report([["a"], ["b"]], ["a", "b"]).jain_index == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not among"):
        fairness_report([["zz"]], ["a"])


def test_weighted_sample_draws_zero_weights_last():
    names = ["a", "b", "c", "d"]
    for seed in range(20):
        picked = weighted_sample(names, np.array([0.0, 1.0, 0.0, 2.0]), 2, np.random.default_rng(seed))
        assert set(picked) == {"b", "d"}
    with pytest.raises(ValueError):
        weighted_sample(names, np.array([1.0, np.nan, 1.0, 1.0]), 2, np.random.default_rng(0))


def test_from_status_reads_the_published_fields_and_refuses_bad_ones():
    status = {"state": "online", "battery_pct": 42, "charging": True, "compute_class": "m7",
              "link_quality_permille": 800, "signal_quality_permille": 650, "consent": False}
    s = DeviceStatus.from_status("sim000001", status, reliability=0.9)
    assert (s.battery_pct, s.charging, s.compute_class, s.link_quality, s.signal_quality, s.consent, s.online,
            s.reliability) == (42.0, True, "m7", 0.8, 0.65, False, True, 0.9)
    assert not DeviceStatus.from_status("x", {"state": "offline"}).online
    for bad in ({"state": "online", "battery_pct": "full"}, {"state": "online", "battery_pct": 140},
                {"state": "online", "compute_class": "cray"}, {"state": "online", "link_quality_permille": float("nan")}):
        with pytest.raises(ValueError):
            DeviceStatus.from_status("x", bad)
    with pytest.raises(ValueError, match="unknown selection policy"):
        make_policy("best")


def test_selection_fairness_command_compares_every_policy(tmp_path, capsys):
    import json

    from tools.cli import main

    out = tmp_path / "fair.json"
    assert main(["selection-fairness", "--devices", "200", "--k", "20", "--rounds", "15", "--json", str(out)]) == 0
    rows = {r["policy"]: r for r in json.loads(out.read_text())["policies"]}
    assert set(rows) == set(POLICIES)
    assert rows["power-aware"]["eligible_devices"] < rows["uniform"]["eligible_devices"]
    assert rows["power-aware"]["chosen_share_charging"] > rows["uniform"]["chosen_share_charging"]
    assert 0 < rows["uniform"]["jain_index"] <= 1
    assert main(["selection-fairness", "--devices", "10", "--k", "11"]) == 2
    assert "--k" in capsys.readouterr().err
