"""Second-lead beats (loading, caching) and per-class logit offsets (fitting, folding into the output bias,
equal to post-hoc offsets in LiteRT, bit-exact in the generated C) on real MIT-BIH beats."""
from __future__ import annotations

import shutil

import keras
import numpy as np
import pytest

from edge_runtime.aami import AAMI_CLASSES
from edge_runtime.signal_config import SignalConfig
from training.calibration import OffsetSearch, fit_logit_offsets, fold_offsets, prior_offsets
from training.data.beat_dataset import load_beats, record_beats
from training.data.mitdb import OTHER_LEAD, load_record
from training.train import TrainedModel


def test_second_lead_has_the_same_beats_and_its_own_waveforms(excerpt_dir):
    assert load_record(excerpt_dir, "208x", OTHER_LEAD).lead == "V1"
    cfg = SignalConfig()
    mlii = record_beats(excerpt_dir, "208x", cfg)
    other = record_beats(excerpt_dir, "208x", cfg, lead=OTHER_LEAD)
    np.testing.assert_array_equal(other.labels, mlii.labels)
    np.testing.assert_array_equal(other.sample, mlii.sample)
    np.testing.assert_array_equal(other.rr, mlii.rr)  # same reference beats: same rhythm
    assert set(other.lead) == {"other"} and set(mlii.lead) == {"MLII"}
    assert np.mean(np.abs(other.waves - mlii.waves)) > 0.1  # a different electrode, a different shape
    with pytest.raises(ValueError, match="lead must be one of"):
        record_beats(excerpt_dir, "208x", cfg, lead="V5")


def test_both_leads_are_cached_apart_and_served_identically(excerpt_dir, tmp_path):
    cfg = SignalConfig()
    both = load_beats(excerpt_dir, ["208x"], cfg, tmp_path, progress=False, leads=("MLII", OTHER_LEAD))
    folder = tmp_path / "beats" / cfg.digest()
    assert (folder / "208x.npz").is_file() and (folder / OTHER_LEAD / "208x.npz").is_file()
    again = load_beats(excerpt_dir, ["208x"], cfg, tmp_path, progress=False, leads=("MLII", OTHER_LEAD))
    for field in ("waves", "rr", "labels", "record", "sample", "lead"):
        np.testing.assert_array_equal(getattr(again, field), getattr(both, field))
    fresh = record_beats(excerpt_dir, "208x", cfg, lead=OTHER_LEAD)
    np.testing.assert_array_equal(both.of_leads([OTHER_LEAD]).waves, fresh.waves)
    assert len(both) == 2 * len(fresh)
    assert len(both.of_records(["208x"]).of_leads(["MLII"])) == len(fresh)


def test_perturbed_copies_go_through_the_same_pipeline_and_are_cached(excerpt_dir, tmp_path):
    from training.data.augment import AUG_SUFFIX, chain_for, load_augmented, perturbed_record_beats

    cfg = SignalConfig()
    clean = record_beats(excerpt_dir, "208x", cfg)
    noisy = perturbed_record_beats(excerpt_dir, "208x", cfg, "MLII", ("wander:1", "emg:12"), seed=0)
    assert set(noisy.lead) == {"MLII" + AUG_SUFFIX}
    common, i, j = np.intersect1d(clean.sample, noisy.sample, return_indices=True)
    assert common.size > 0.95 * len(clean)  # the same reference beats (a few lost at excluded ranges at most)
    np.testing.assert_array_equal(noisy.labels[j], clean.labels[i])
    diff = np.abs(noisy.waves[j] - clean.waves[i]).mean()
    assert 0.01 < diff < 0.5  # noisy, yet still the same beats
    first = load_augmented(excerpt_dir, ["208x"], cfg, ("MLII", OTHER_LEAD), 0, tmp_path)
    assert set(first.lead) == {"MLII" + AUG_SUFFIX, OTHER_LEAD + AUG_SUFFIX}
    assert chain_for("208x", "MLII", 0) != chain_for("208x", OTHER_LEAD, 0)  # each lead its own noise
    cached = list((tmp_path / "beats" / cfg.digest()).rglob("aug-*/208x.npz"))
    assert len(cached) == 2
    again = load_augmented(excerpt_dir, ["208x"], cfg, ("MLII", OTHER_LEAD), 0, tmp_path)
    np.testing.assert_array_equal(again.waves, first.waves)
    np.testing.assert_array_equal(again.lead, first.lead)


def test_offset_search_finds_the_smallest_offset_that_fixes_a_shifted_boundary():
    classes, scored = ("N", "S", "V"), ("N", "S", "V")
    labels = np.array([0] * 50 + [1] * 10 + [2] * 10)
    logits = np.zeros((70, 3))
    logits[:50] = [0.0, -2.1, -5.0]   # N beats: S logit 2.1 below N
    logits[50:60] = [0.0, -1.1, -5.0]  # S beats: S logit 1.1 below N, so all called N without an offset
    logits[60:] = [0.0, -5.0, 3.0]     # V beats: already right
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    offsets = fit_logit_offsets(probs, labels, classes, scored, OffsetSearch(tuned=("S", "V")))
    # every beat is right for 1.1 < o < 2.1 (1.25 ... 2.0 on the grid); the closest to 0 wins
    np.testing.assert_allclose(offsets, [0.0, 1.25, 0.0])
    assert np.all(np.argmax(np.log(probs) + offsets, axis=1) == labels)
    with pytest.raises(ValueError, match="unknown classes"):
        fit_logit_offsets(probs, labels, classes, scored, OffsetSearch(tuned=("F",)))


def test_prior_offsets_take_the_class_weights_shift_out_again():
    weights = np.array([0.5, 2.0, 1.0, 4.0, 20.0])
    offsets = prior_offsets(weights)
    np.testing.assert_allclose(offsets, np.log(0.5) - np.log(weights), rtol=1e-6)
    assert offsets[0] == 0
    # weighted log-probabilities plus the offsets rank classes as the unweighted ones do
    log_p = np.log(np.array([[0.6, 0.1, 0.2, 0.05, 0.05], [0.2, 0.3, 0.4, 0.05, 0.05]]))
    weighted = log_p + np.log(weights)
    assert np.array_equal(np.argmax(weighted + offsets, axis=1), np.argmax(log_p, axis=1))
    assert not np.array_equal(np.argmax(weighted, axis=1), np.argmax(log_p, axis=1))
    with pytest.raises(ValueError, match="positive"):
        prior_offsets(np.array([1.0, 0.0]))


def _folded_copy(trained: TrainedModel, offsets: np.ndarray) -> TrainedModel:
    model = keras.models.clone_model(trained.model)
    model.set_weights(trained.model.get_weights())
    fold_offsets(model, offsets)
    return TrainedModel(model=model, rr_scaler=trained.rr_scaler, config=trained.config,
                        logit_offsets=tuple(float(o) for o in offsets))


@pytest.fixture(scope="module")
def folded(exported, tmp_path_factory):
    from training.export import export_model, representative_beats

    trained, test = exported["trained"], exported["test"]
    offsets = np.array([0.0, 1.0, -0.75, 0.5, 0.0], np.float32)
    out = tmp_path_factory.mktemp("folded")
    copy = _folded_copy(trained, offsets)
    calib = test.subset(representative_beats(test, 300, 0))
    return {"offsets": offsets,
            "float32": export_model(copy, out / "f_float32.tflite", "float32", "fold"),
            "int8": export_model(copy, out / "f_int8.tflite", "int8", "fold", calib)}


def test_folded_bias_equals_post_hoc_offsets_in_litert(exported, folded):
    from edge_runtime.classifier import BeatClassifier

    test = exported["test"].subset(np.arange(1500))
    plain = BeatClassifier.from_file(exported["float32"].tflite_path).predict_proba(test.waves, test.rr)
    moved = BeatClassifier.from_file(folded["float32"].tflite_path).predict_proba(test.waves, test.rr)
    post_hoc = np.log(plain) + folded["offsets"]
    post_hoc = np.exp(post_hoc - post_hoc.max(axis=1, keepdims=True))
    post_hoc /= post_hoc.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(moved, post_hoc, atol=2e-5)
    assert np.array_equal(np.argmax(moved, axis=1), np.argmax(post_hoc, axis=1))
    assert not np.array_equal(np.argmax(moved, axis=1), np.argmax(plain, axis=1))  # the offsets matter here


@pytest.mark.firmware
def test_folded_int8_model_is_bit_exact_in_generated_c(exported, folded, tmp_path):
    from edge_runtime.classifier import BeatClassifier
    from training.codegen.references import model_io, run_reference
    from training.codegen.verify import agreement, run_generated_host

    if shutil.which("gcc") is None:
        pytest.fail("gcc not found: `make test` installs it")
    path = folded["int8"].tflite_path
    model = path.read_bytes()
    test = exported["test"].subset(np.arange(500))
    qw, qr = BeatClassifier.from_file(path).quantize_inputs(test.waves, test.rr)
    ins, _ = model_io(model)
    inputs = [(qw if len(shape) == 3 else qr).reshape((len(test),) + tuple(shape[1:])) for _, shape in ins]
    _, outs, _ = run_generated_host(model, inputs, tmp_path, "tflm")
    result = agreement(outs, {"tflm": run_reference(model, inputs, "tflm")})
    assert result.identical["tflm"] == len(test), result
    assert AAMI_CLASSES[1] == "S"  # the offsets above lift S; the class order is the metadata's


def test_intra_patient_split_keeps_both_leads_of_a_beat_together():
    from training.data.beat_dataset import BeatDataset
    from training.data.protocols import make_split

    n = 200
    labels = np.repeat(np.array([0, 1, 2, 3], np.int8), n // 4)
    def lead(tag):
        return BeatDataset(np.zeros((n, 4), np.float32), np.zeros((n, 7), np.float32), labels,
                           np.array(["100", "101"] * (n // 2)), np.arange(n, dtype=np.int64) * 300,
                           np.full(n, tag))
    mlii = lead("MLII")
    both = BeatDataset.concat([mlii, lead(OTHER_LEAD)])
    alone, split = make_split("intra", mlii, 3), make_split("intra", both, 3)
    for a, b in zip((alone.train, alone.val, alone.test), (split.train, split.val, split.test)):
        np.testing.assert_array_equal(b[b < n], a)  # the MLII split is what it was without the other lead
        np.testing.assert_array_equal(np.sort(both.sample[b[b >= n]]), np.sort(mlii.sample[a]))
