"""The privacy benchmark's pieces that need no training: noise calibration, sub-patient devices, the report."""
import math

import numpy as np
import pytest

from tools.privacy_bench import BenchSettings, defences, markdown, noise_for_epsilon
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
