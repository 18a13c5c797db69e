"""The privacy benchmark's pieces that need no training: noise calibration, sub-patient devices, the report."""
import math

import numpy as np
import pytest

from tools.privacy_bench.report import goal, markdown, seed_cells
from tools.privacy_bench.settings import BenchSettings, defences, noise_for_epsilon
from training.data.beat_dataset import BeatDataset
from training.federated.privacy import epsilon
from training.federated.simulation import make_partition


@pytest.mark.parametrize("eps, rounds", [(1.0, 10), (4.0, 10), (8.0, 2)])
def test_noise_is_calibrated_to_the_target_epsilon(eps, rounds):
    z = noise_for_epsilon(eps, rounds)
    assert epsilon(z, 1.0, rounds, 1e-6) <= eps < epsilon(0.99 * z, 1.0, rounds, 1e-6)
    assert noise_for_epsilon(math.inf, rounds) == 0.0


def test_sub_patient_devices_cut_each_record_into_consecutive_stretches():
    records = np.array(["100"] * 7 + ["101"] * 5)
    data = BeatDataset(np.zeros((12, 4), np.float32), np.zeros((12, 2), np.float32), np.zeros(12, np.int8), records,
                       np.arange(12))
    parts = make_partition("subpatient:2", data, 0)
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11]]
    with pytest.raises(ValueError, match="subpatient"):
        make_partition("subpatient:x", data, 0)


def test_defences_are_set_for_thirty_percent_and_the_report_renders():
    d = defences(17)
    assert d["multi_krum"] == ("krum", {"byzantine": 5, "multi": 12}) and d["trimmed_mean"][1] == {"trim": 0.3}
    row = {"ds2_macro_f1": 0.5, "s_se": 0.4, "v_se": 0.8, "best_round": 3}
    results = {"settings": {**BenchSettings.quick().__dict__, "delta": 1e-6, "evaluation": "x"},
               "dp": [{"sub_devices_per_patient": 1, "devices": 17, "epsilon_target": math.inf, "noise_multiplier": 0.0,
                       "clip": 1.0, "epsilon_rdp": math.inf, "epsilon_pld": math.inf, "noise_sd_on_mean": 0.0, **row}],
               "attacks": [{"attack": "none", "share": 0.0, "attackers": 0, "defence": "fedavg", **row},
                           {"attack": "sign_flip", "share": 0.3, "attackers": 5, "defence": "fedavg",
                            **{**row, "ds2_macro_f1": 0.3}},
                           {"attack": "sign_flip", "share": 0.3, "attackers": 5, "defence": "median",
                            **{**row, "ds2_macro_f1": 0.48}}]}
    md = markdown(results, "pulsewire privacy-bench")
    assert "| 1 | 17 | ∞ |" in md and "| sign_flip | 30% (5) | 0.300 | 0.480 | -0.020 |" in md


def _run(seed, attack, share, defence, f1, attackers=5):
    return {"key": f"s{seed}/attack/{attack}/{share:g}/{defence}", "seed": seed, "attack": attack, "share": share,
            "defence": defence, "attackers": attackers, "ds2_macro_f1": f1, "s_se": 0.1, "v_se": 0.9, "best_round": 3}


def test_seeds_are_aggregated_per_cell_and_the_goal_is_judged_on_the_means():
    # Prepare: clean FedAvg on 3 seeds; median on 2 of 3 seeds under sign_flip, on 3 under scale:10; one seed gives
    # 6 attackers instead of 5 (more training patients).
    rows = ([_run(s, "none", 0.0, "fedavg", f1, 0) for s, f1 in ((0, 0.40), (1, 0.42), (2, 0.44))]
            + [_run(s, "sign_flip", 0.3, "fedavg", f1, a) for s, f1, a in ((0, 0.30, 5), (1, 0.32, 5), (2, 0.34, 6))]
            + [_run(s, "sign_flip", 0.3, "median", f1) for s, f1 in ((0, 0.38), (1, 0.42))]
            + [_run(s, "scale:10", 0.3, "median", 0.41) for s in (0, 1, 2)] + [_run(0, "scale:10", 0.3, "fedavg", 0.2)])
    results = {"settings": {**BenchSettings().__dict__, "seeds": [0, 1, 2], "delta": 1e-6, "evaluation": "x"},
               "attacks": rows}

    # Execute
    cells = seed_cells(rows, ("attack", "share", "defence"))
    g = goal(rows)
    md = markdown(results, "pulsewire privacy-bench")
    worse = goal([{**r, "ds2_macro_f1": 0.36} if r["key"] == "s1/attack/sign_flip/0.3/median" else r for r in rows])

    # Assert: sample std (ddof 1), n and seeds per cell; the gap is the best robust mean − the clean FedAvg mean over
    # the same seeds (median under sign_flip: 0.40 − 0.41, not − 0.42)
    clean = cells[("none", 0.0, "fedavg")]
    assert clean["mean"] == pytest.approx(0.42) and clean["std"] == pytest.approx(0.02) and clean["n"] == 3
    assert cells[("sign_flip", 0.3, "median")]["seeds"] == [0, 1]
    assert cells[("scale:10", 0.3, "fedavg")]["std"] is None
    assert "seeds 0, 1, 2" in md
    assert "| none | 0% (0) | 0.420 ± 0.020 (n=3) | – | – |" in md
    assert "| sign_flip | 30% (5–6) | 0.320 ± 0.020 (n=3) | 0.400 ± 0.028 (n=2 of 3) | -0.010 |" in md
    assert "| scale:10 | 30% (5) | 0.200 (n=1 of 3) | 0.410 ± 0.000 (n=3) | -0.010 |" in md
    assert g["per_attack"]["sign_flip"]["gap"] == pytest.approx(-0.01) and g["holds_per_attack"]
    assert g["single_defence"] == "median" and g["single_defence_worst_gap"] == pytest.approx(-0.01)
    assert "it holds that way. With one defence against every attack (median, worst -0.010) it holds." in md
    assert worse["per_attack"]["sign_flip"]["gap"] == pytest.approx(-0.04)
    assert not worse["holds_per_attack"] and not worse["holds_with_one_defence"]


def test_a_worker_gets_one_seed_its_own_checkpoint_and_no_secure_aggregation_part(tmp_path):
    import argparse

    from tools.cli import build_parser
    from tools.privacy_bench.command import worker_arguments

    argv = ["privacy-bench", "--jobs", "2", "--seeds", "0", "1", "2", "--rounds", "5", "--only", "/0.3/",
            "--data-dir", "/data/mitdb"]
    args = build_parser().parse_args(argv)
    worker = worker_arguments(args, 1, tmp_path / "ck.seed1.json")
    again = build_parser().parse_args(worker)  # a command line the CLI accepts
    assert isinstance(again, argparse.Namespace) and again.seeds == [1] and again.jobs == 1
    assert again.parts == ["dp", "attacks"] and again.rounds == 5 and again.only == ["/0.3/"]
    assert again.checkpoint == str(tmp_path / "ck.seed1.json") and again.data_dir == "/data/mitdb"


def test_the_deployable_defence_is_chosen_on_validation_not_on_ds2():
    def run(seed, attack, defence, f1, val):
        return {**_run(seed, attack, 0.0 if attack == "none" else 0.3, defence, f1), "best_val_macro_f1": val}

    # median is best on DS2 against sign_flip but worst on validation against scale:10; krum is the safe choice
    rows = ([run(s, "none", "fedavg", 0.50, 0.40) for s in (0, 1)]
            + [run(s, "sign_flip", "median", 0.50, 0.40) for s in (0, 1)]
            + [run(s, "scale:10", "median", 0.40, 0.10) for s in (0, 1)]
            + [run(s, "sign_flip", "krum", 0.45, 0.30) for s in (0, 1)]
            + [run(s, "scale:10", "krum", 0.48, 0.35) for s in (0, 1)])
    g = goal(rows)
    assert g["per_attack"]["sign_flip"]["best_defence"] == "median"
    assert g["chosen_on_validation"] == "krum" and g["chosen_worst_gap"] == pytest.approx(-0.05)
    assert not g["holds_with_validation_choice"]
    from tools.privacy_bench.targets import privacy_targets

    target, _ = privacy_targets({"attacks": rows, "goal": g})  # the bench's target is the validation choice
    assert "krum" in target["target"] and target["mean"] == pytest.approx(-0.05) and target["met"] is False


def test_the_accounting_part_shows_what_dropping_devices_cost():
    from tools.privacy_accounting import accounting_rows, accounting_table

    z = noise_for_epsilon(4.0, 6)
    rows = accounting_rows(6, 1e-6, z, devices=20)
    ref = next(r for r in rows if r["scenario"].startswith("reference"))
    assert ref["epsilon_rdp"] == pytest.approx(1.7118, abs=1e-4)
    assert ref["epsilon_pld"] == pytest.approx(1.5154, abs=1e-3)
    full, dropping = [r for r in rows if r["scenario"].startswith("DP-FedAvg")]
    # composed, participation public: dropping devices changes nothing; the old recomputation fell below
    assert dropping["epsilon_rdp"] == full["epsilon_rdp"] == pytest.approx(epsilon(z, 1.0, 6, 1e-6))
    assert dropping["old_recomputed_rdp"] < full["epsilon_rdp"] and not dropping["old_never_decreases"]
    assert all(r["never_decreases"] in (True, None) for r in rows)
    poisson = next(r for r in rows if "sample themselves" in r["scenario"])
    assert poisson["epsilon_rdp"] < full["epsilon_rdp"]
    page = markdown({"settings": {**BenchSettings.quick().__dict__, "rounds": 6, "seeds": [0], "delta": 1e-6,
                                  "evaluation": "x"}, "accounting": rows}, "pulsewire privacy-bench")
    assert "## (d)" in page and "fell during the run" in page and len(accounting_table(rows)) == 8
    published = next(r for r in rows if r["scenario"].startswith("published DP-FedAvg"))
    assert published["epsilon_rdp"] == pytest.approx(published["published_epsilon"], rel=0.05)


def test_only_a_defence_run_on_every_attack_and_seed_competes_and_the_miss_is_measured():
    def run(seed, attack, defence, f1, val):
        return {**_run(seed, attack, 0.0 if attack == "none" else 0.3, defence, f1), "best_val_macro_f1": val}

    # trimmed_mean has the best validation but lacks seed 1 under scale:10: krum is chosen; its worst DS2 attack is
    # sign_flip, seeds 0.40 / 0.44 against clean 0.50 / 0.46 -> gaps -0.10 / -0.02, mean -0.06, missed by 0.03
    rows = ([run(0, "none", "fedavg", 0.50, 0.40), run(1, "none", "fedavg", 0.46, 0.42)]
            + [run(s, "sign_flip", "krum", f1, 0.30) for s, f1 in ((0, 0.40), (1, 0.44))]
            + [run(s, "scale:10", "krum", 0.48, 0.35) for s in (0, 1)]
            + [run(s, "sign_flip", "trimmed_mean", 0.45, 0.50) for s in (0, 1)]
            + [run(0, "scale:10", "trimmed_mean", 0.45, 0.50)])
    g = goal(rows)
    assert g["chosen_on_validation"] == "krum" and not g["validation_by_defence"]["trimmed_mean"]["complete"]
    assert g["validation_by_defence"]["krum"] == {"complete": True, "worst_attack": "sign_flip",
                                                  "worst_val_mean": pytest.approx(0.30),
                                                  "bound_on_worst": pytest.approx(0.30),
                                                  "val_mean_by_attack": {"sign_flip": pytest.approx(0.30),
                                                                         "scale:10": pytest.approx(0.35)}}
    assert g["chosen_worst_attack"] == "sign_flip" and g["chosen_worst_gap"] == pytest.approx(-0.06)
    assert g["chosen_gap_by_seed"] == {0: pytest.approx(-0.10), 1: pytest.approx(-0.02)}
    assert g["chosen_worst_val_gap"] == pytest.approx(0.30 - 0.41) and g["missed_by"] == pytest.approx(0.03)
    assert "DS2 macro F1" in g["met_metric"] and "validation" in g["selection_rule"]
    md = markdown({"settings": {**BenchSettings().__dict__, "seeds": [0, 1], "delta": 1e-6, "evaluation": "x"},
                   "attacks": rows}, "pulsewire privacy-bench")
    assert "**Chosen on DS1 validation: krum**" in md and "missed by 0.030" in md
    assert "| trimmed_mean | no | – | – | 0.500 | no |" in md and "## (c') The same runs" in md
    # trimmed_mean's bound (0.50 on sign_flip, every seed) is above krum's worst (0.30): the choice is not settled;
    # a bound below it rules the defence out
    assert g["ruled_out_by_bound"] == {"trimmed_mean": False} and not g["choice_settled"]
    low = goal([{**r, "best_val_macro_f1": 0.2} if r["defence"] == "trimmed_mean" else r for r in rows])
    assert low["ruled_out_by_bound"] == {"trimmed_mean": True} and low["choice_settled"]
