"""Federated leave-records-out cross-validation over DS1 (`pulsewire classifier-cv --federated`): every held-out
fold is scored by the last round of an in-process federation over the other patients' devices, with each round's
held-out macro F1 kept, on real MIT-BIH beats."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from training.config import TrainConfig
from training.data.feature_sets import load_feature_beats
from training.data.splits import DS1

RECORDS = ("101", "106", "118", "119")


def _fed(rounds: int = 2):
    from training.federated.local_training import LocalConfig
    from training.federated.simulation import FederatedConfig

    return FederatedConfig(rounds=rounds, local=LocalConfig(epochs=1, label_shift=True))


def test_run_simulation_keeps_the_last_round_when_asked(mitdb_dir, cache_root):
    from training.federated.simulation import run_simulation
    from training.train import evaluate_keras

    data = load_feature_beats(mitdb_dir, RECORDS, cache_root)
    train, val = data.of_records(RECORDS[:3]), data.of_records(RECORDS[3:])
    last = run_simulation(train, val, _fed(3), TrainConfig(), progress=False, keep="last")
    assert last.best_epoch == 3 and len(last.history) == 3
    score = evaluate_keras(last.model, val, last.rr_scaler)["macro_f1"]
    assert score == pytest.approx(last.history[-1]["val_macro_f1"])  # the model is round 3's, not the best's
    with pytest.raises(ValueError, match="keep"):
        run_simulation(train, val, _fed(), TrainConfig(), progress=False, keep="first")


def test_federated_folds_score_every_held_out_beat_with_per_round_curves(mitdb_dir, cache_root):
    from training.cross_validation import cross_validate_seed
    from training.federated.simulation import run_simulation

    data = load_feature_beats(mitdb_dir, RECORDS, cache_root)
    got = cross_validate_seed(data, TrainConfig(), 2, RECORDS,
                              lambda tr, val, cfg: run_simulation(tr, val, _fed(), cfg, progress=False, keep="last"))
    assert len(got.probs) == len(data)
    np.testing.assert_allclose(got.probs.sum(axis=1), 1.0, atol=1e-4)
    assert len(got.fold_curves) == 2 and all(len(c) == 2 for c in got.fold_curves)
    assert all(0.0 <= f1 <= 1.0 for c in got.fold_curves for f1 in c)


def test_classifier_cv_federated_cli_reports_the_last_rounds(mitdb_dir, tmp_path):
    from tools.classifier_cv import last_rounds_mean

    out = tmp_path / "cv.json"
    env = dict(os.environ, MITDB_DIR=str(mitdb_dir), PULSEWIRE_CACHE=str(tmp_path / "cache"))
    run = subprocess.run([sys.executable, "-m", "tools.cli", "classifier-cv", "--federated", "--features", "rr",
                          "--max-records", "4", "--folds", "2", "--rounds", "2", "--local-epochs", "1",
                          "--last-rounds", "2", "--seeds", "0", "--json", str(out)],
                         capture_output=True, text=True, check=False, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())
    trainer = results["trainer"]
    assert trainer["kind"].startswith("federated") and trainer["leads"] == ["MLII"]
    assert trainer["strategy"] == "fedavg" and trainer["local"]["label_shift"] is True and trainer["rounds"] == 2
    design = results["designs"]["rr"]
    assert sorted(r for f in design["folds"][0] for r in f) == sorted(DS1[:4])
    curves = design["fold_curves"][0]
    assert len(curves) == 2 and all(len(c) == 2 for c in curves)
    assert design["last_rounds_macro_f1"][0] == pytest.approx(last_rounds_mean(curves, 2))
    assert "over the last 2 rounds" in run.stdout
    assert last_rounds_mean(((0.2, 0.4, 0.6), (0.1, 0.3, 0.5)), 2) == pytest.approx(0.45)


def test_training_refuses_beats_of_another_input_contract_and_names_follow_metadata():
    from edge_runtime.template_features import FEATURE_SETS, feature_set_of

    TrainConfig(features="rr+template").check_rr_width(len(FEATURE_SETS["rr+template"]))
    with pytest.raises(ValueError, match="load_feature_beats"):
        TrainConfig(features="rr+template").check_rr_width(len(FEATURE_SETS["rr"]))
    assert all(feature_set_of(list(names)) == name for name, names in FEATURE_SETS.items())
    with pytest.raises(ValueError, match="none of the known sets"):
        feature_set_of(("pre_rr_s",))
