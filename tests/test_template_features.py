"""Beat-versus-template features (stream == batch, separate V from N on real beats, carried by a model's
metadata into the edge runtime and the C front-end's configuration) and leave-records-out cross-validation over DS1
(folds of whole DS1 patients, every held-out beat scored once, DS2 refused), on real MIT-BIH data."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edge_runtime.aami import AAMI_CLASSES
from edge_runtime.beat_stream import BeatStream, offline_beats
from edge_runtime.signal_config import RR_FEATURE_NAMES, SignalConfig
from edge_runtime.template_features import (
    FEATURE_SETS,
    TEMPLATE_FEATURE_NAMES,
    template_features,
)
from training.data.beat_dataset import load_beats, record_beats
from training.data.feature_sets import with_feature_set
from training.data.mitdb import load_record
from training.data.protocols import ds1_folds
from training.data.splits import DS1, DS2

EXTENDED = FEATURE_SETS["rr+template"]


def test_streamed_template_features_equal_the_batch_features(excerpt_dir):
    raw = load_record(excerpt_dir, "208x").signal_mv
    cfg = SignalConfig()
    _, ref = offline_beats(raw, cfg)
    batch = np.concatenate([ref.rr, template_features(ref.waves, ref.rr, cfg)], axis=1)
    assert batch.shape[1] == len(EXTENDED)
    rng = np.random.default_rng(3)
    stream = BeatStream(cfg, features=EXTENDED)
    beats, i = [], 0
    while i < raw.size:
        n = int(rng.integers(1, 2000))
        beats += stream.process(raw[i:i + n])
        i += n
    beats += stream.flush()
    np.testing.assert_array_equal(np.stack([b.rr for b in beats]), batch)
    plain = BeatStream(cfg).process(raw)  # the default stream keeps the 7 RR features
    assert plain and all(b.rr.shape == (len(RR_FEATURE_NAMES),) for b in plain)
    with pytest.raises(ValueError, match="unknown feature names"):
        BeatStream(cfg, features=("pre_rr_s",))


def test_template_features_tell_ventricular_from_normal_beats(excerpt_dir):
    cfg = SignalConfig()
    data = with_feature_set(record_beats(excerpt_dir, "208x", cfg), "rr+template", cfg)
    np.testing.assert_array_equal(data.rr[:, :len(RR_FEATURE_NAMES)], record_beats(excerpt_dir, "208x", cfg).rr)
    col = {name: len(RR_FEATURE_NAMES) + i for i, name in enumerate(TEMPLATE_FEATURE_NAMES)}
    n, v = data.labels == AAMI_CLASSES.index("N"), data.labels == AAMI_CLASSES.index("V")
    assert n.sum() > 100 and v.sum() > 50
    corr = data.rr[:, col["tmpl_corr_qrs"]]
    assert np.median(corr[n]) > 0.9 and np.median(corr[v]) < np.median(corr[n]) - 0.2
    width = data.rr[:, col["tmpl_log_width_qrs"]]
    assert np.median(width[v]) > np.median(width[n]) + 0.2  # a ventricular QRS is wider than the template's
    assert np.all(np.isfinite(data.rr))
    with pytest.raises(ValueError, match="unknown feature set"):
        with_feature_set(data, "rr+wavelets", cfg)


def test_a_template_model_runs_on_the_edge_and_configures_the_firmware(excerpt_dir, tmp_path):
    from edge_runtime.classifier import BeatClassifier
    from edge_runtime.runtime import EdgeRuntime
    from training.codegen.frontend import frontend_config
    from training.codegen.selftest_beat import selftest_beat_header
    from training.config import TrainConfig
    from training.export import export_model, representative_beats
    from training.train import train_centralized

    cfg = TrainConfig(epochs=1, min_epochs=1, features="rr+template")
    data = with_feature_set(record_beats(excerpt_dir, "208x", cfg.signal), cfg.features, cfg.signal)
    trained = train_centralized(data, data, cfg, verbose=0)
    ex = export_model(trained, tmp_path / "t_int8.tflite", "int8", "t", data.subset(representative_beats(data, 200, 0)))
    assert ex.metadata.rr_feature_names == EXTENDED
    clf = BeatClassifier.from_file(ex.tflite_path)
    runtime = EdgeRuntime(clf, 360.0, [])
    stats = runtime.run([load_record(excerpt_dir, "208x").signal_mv])
    assert stats.beats > 100
    header = frontend_config(ex.metadata)  # the C front-end computes the template features too
    assert "#define PW_FE_TEMPLATE 1" in header and f"#define PW_FE_FEATURES {len(EXTENDED)}" in header
    selftest = selftest_beat_header(ex.tflite_path.read_bytes(), ex.metadata)
    assert f"pw_selftest_rr[{len(EXTENDED)}]" in selftest
    with pytest.raises(ValueError, match="unknown feature set"):
        TrainConfig(features="wavelets")


def test_ds1_folds_are_disjoint_whole_ds1_patients_drawn_by_seed():
    folds = ds1_folds(0, 5)
    flat = [r for f in folds for r in f]
    assert sorted(flat) == sorted(DS1) and len(flat) == len(set(flat)) == 22
    assert all(4 <= len(f) <= 5 for f in folds)
    from training.data.protocols import _DS1_SVF

    for k, seed in ((4, 0), (4, 2), (5, 1)):  # every fold holds ectopic beats to score
        assert all(sum(sum(_DS1_SVF[r][:2]) for r in f) >= 500 for f in ds1_folds(seed, k))
    assert ds1_folds(0, 5) == folds and ds1_folds(1, 5) != folds
    with pytest.raises(ValueError, match="not DS1"):
        ds1_folds(0, 2, ("101", DS2[0]))
    with pytest.raises(ValueError, match="folds"):
        ds1_folds(0, 23)


def test_cross_validation_scores_every_held_out_ds1_beat_once(mitdb_dir, cache_root):
    from training.config import TrainConfig
    from training.cross_validation import cross_validate_seed

    records = ("101", "106", "118", "119")
    data = load_beats(mitdb_dir, records, SignalConfig(), cache_root, progress=False, leads=("MLII", "other"))
    cfg = TrainConfig(epochs=1, min_epochs=1, seed=0, features="rr")  # the cached columns as loaded
    got = cross_validate_seed(data, cfg, 2, records)
    assert len(got.probs) == len(data)  # both leads scored, each beat once
    np.testing.assert_allclose(got.probs.sum(axis=1), 1.0, atol=1e-4)
    assert sorted(r for f in got.folds for r in f) == sorted(records)
    rep = got.report("none", "MLII")
    assert rep["n_beats"] == len(data.of_leads(["MLII"]))
    prior = got.offsets["prior"][got.lead == "MLII"]
    assert np.all(prior[:, 0] == 0) and np.all(prior[:, 2] < 0)  # V is up-weighted, so its offset is negative
    assert len(got.fold_macro_f1("prior", "other")) == 2
    with pytest.raises(ValueError, match="DS1"):
        cross_validate_seed(load_beats(mitdb_dir, ("100",), SignalConfig(), cache_root, progress=False), cfg, 2,
                            records)


def test_classifier_cv_cli_writes_pooled_reports_per_design_and_rule(mitdb_dir, tmp_path):
    import json
    import os

    out = tmp_path / "cv.json"
    env = dict(os.environ, MITDB_DIR=str(mitdb_dir), PULSEWIRE_CACHE=str(tmp_path / "cache"))
    run = subprocess.run([sys.executable, "-m", "tools.cli", "classifier-cv", "--max-records", "4", "--folds", "2",
                          "--epochs", "1", "--seeds", "0", "--leads", "MLII", "--json", str(out)],
                         capture_output=True, text=True, check=False, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())
    assert set(results["designs"]) == {"rr", "rr+template"}
    for design in results["designs"].values():
        assert set(design["rules"]) == {"none", "prior"}
        mlii = design["rules"]["none"]["MLII"]
        assert mlii["runs"][0]["n_beats"] > 5000 and len(mlii["fold_macro_f1"][0]) == 2
        assert sorted(r for f in design["folds"][0] for r in f) == sorted(DS1[:4])
    assert "| rr+template | prior | other |" in run.stdout


def test_classifier_cv_cli_rejects_impossible_folds():
    run = subprocess.run([sys.executable, "-m", "tools.cli", "classifier-cv", "--max-records", "3", "--folds", "4"],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 2 and "cannot fill 4 folds" in run.stderr
