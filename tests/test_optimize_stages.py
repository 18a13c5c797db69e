"""Each optimization stage on a small model trained on real beats, exported to int8 and run in LiteRT and
TFLite-Micro (no mocks): sparsity is counted in the exported weights, sizes in the flatbuffer."""
from dataclasses import replace

import keras
import numpy as np
import pytest

from edge_runtime.classifier import BeatClassifier
from training.export import export_model, representative_beats
from training.optimize.deploy import FIRMWARE_OPS, conv_head, flatbuffer_facts
from training.optimize.fitting import FitConfig, distillation_loss, fit_selected, packed_targets
from training.optimize.prune import MagnitudePruning, kernel_sparsity, prunable_kernels, structured_prune
from training.tflm_check import check_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small(exported, mitdb_dir, cache_root):
    """The shared fixture's model, a third of its training beats (fine-tuning), two validation records."""
    from training.data.beat_dataset import load_beats

    trained = exported["trained"]
    train = load_beats(mitdb_dir, ["106", "119", "201", "209", "223", "208"], trained.config.signal, cache_root,
                       progress=False)
    val = load_beats(mitdb_dir, ["118", "207"], trained.config.signal, cache_root, progress=False)
    return {"trained": trained, "train": train.subset(np.arange(0, len(train), 3)), "val": val,
            "calib": train.subset(representative_beats(train, 300, 0)), "test": exported["test"]}


def _export(small, model, cfg_model, path):
    trained = replace(small["trained"], model=model, config=replace(small["trained"].config, model=cfg_model))
    ex = export_model(trained, path, "int8", "test", small["calib"])
    return ex, flatbuffer_facts(ex.tflite_path.read_bytes())


def _copy(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def test_magnitude_pruning_reaches_the_requested_sparsity(small, tmp_path):
    trained, train = small["trained"], small["train"]
    model = _copy(trained.model)
    fit = FitConfig(epochs=2, min_epochs=2, learning_rate=1e-3)
    steps = int(np.ceil(len(train) / fit.batch_size))
    model.compile(optimizer=keras.optimizers.Adam(fit.learning_rate), loss=distillation_loss(1.0, 1.0))
    fit_selected(model, train, small["val"], trained.rr_scaler, packed_targets(train.labels, fit), fit,
                 [MagnitudePruning(0.6, end_step=steps)])
    sizes = [int(np.prod(k.shape)) for k in prunable_kernels(model)]
    expected = sum(round(0.6 * n) for n in sizes) / sum(sizes)
    assert kernel_sparsity(trained.model) < 0.05  # the unpruned model has (almost) no zeros
    assert kernel_sparsity(model) == pytest.approx(expected, abs=1e-9)
    _, facts = _export(small, conv_head(model), trained.config.model, tmp_path / "pruned_int8.tflite")
    _, dense = _export(small, conv_head(trained.model), trained.config.model, tmp_path / "dense_int8.tflite")
    # counted in the int8 flatbuffer: a float zero quantizes to 0 (symmetric weights), small weights may too
    assert facts.zero_weights / facts.weights >= expected
    assert dense.zero_weights / dense.weights < 0.05
    assert facts.file_bytes == dense.file_bytes  # TFLite stores dense tensors: zeros do not shrink the file


def test_structured_pruning_shrinks_the_int8_file_and_keeps_the_strongest_filters(small, tmp_path):
    trained = small["trained"]
    narrow, narrow_cfg = structured_prune(trained.model, trained.config.model, 0.5)
    assert narrow_cfg.conv_filters == (4, 8, 16) and narrow_cfg.dense_units == 16
    big_kernel = trained.model.get_layer("conv0").get_weights()[0]
    strongest = np.sort(np.argsort(-np.abs(big_kernel).sum(axis=(0, 1)))[:4])
    np.testing.assert_array_equal(narrow.get_layer("conv0").get_weights()[0], big_kernel[:, :, strongest])
    big_ex, big = _export(small, conv_head(trained.model), trained.config.model, tmp_path / "big_int8.tflite")
    small_ex, pruned = _export(small, conv_head(narrow), narrow_cfg, tmp_path / "narrow_int8.tflite")
    assert pruned.file_bytes < big.file_bytes and pruned.weight_bytes < 0.4 * big.weight_bytes
    assert narrow.count_params() < 0.35 * trained.model.count_params()
    for ex in (big_ex, small_ex):  # both still classify real beats through the device's classifier
        pred = BeatClassifier.from_file(ex.tflite_path).predict(small["test"].waves[:500], small["test"].rr[:500])
        assert pred.shape == (500,)


@pytest.fixture(scope="module")
def qat_export(small, tmp_path_factory):
    from training.optimize.qat import deployable_qat, quantize_aware

    trained, train = small["trained"], small["train"]
    fit = FitConfig(epochs=1, min_epochs=1, learning_rate=1e-4)
    qat, result = quantize_aware(trained.model, trained.config.model, train, small["val"], trained.rr_scaler,
                                 packed_targets(train.labels, fit), fit)
    assert result.best_epoch == 1
    deploy = deployable_qat(qat, trained.config.model, train.waves.shape[1], train.rr.shape[1], 5)
    ex, facts = _export(small, deploy, trained.config.model, tmp_path_factory.mktemp("qat") / "qat_int8.tflite")
    return ex, facts


def test_qat_model_exports_to_full_int8(small, qat_export):
    from edge_runtime.interpreter import make_interpreter

    ex, facts = qat_export
    blob = ex.tflite_path.read_bytes()
    interp = make_interpreter(blob)
    dtypes = {np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    assert dtypes <= {"int8", "int32"}, f"float tensors left in the QAT export: {dtypes}"
    assert {t.shape for t in ex.metadata.inputs} == {(1, 100, 1), (1, 7)}
    assert all(t.dtype == "int8" for t in ex.metadata.inputs + ex.metadata.outputs)
    assert set(facts.ops) <= FIRMWARE_OPS and "CONV_2D" in facts.ops
    test = small["test"]
    qat_pred = BeatClassifier.from_file(ex.tflite_path).predict(test.waves, test.rr)
    float_pred = np.argmax(small["trained"].predict_proba(test), axis=1)
    assert np.mean(qat_pred == float_pred) > 0.9  # one gentle QAT epoch keeps the function


def test_tflite_micro_and_litert_reference_kernels_agree_exactly(small, qat_export, tmp_path):
    trained, test = small["trained"], small["test"]
    ptq, ptq_facts = _export(small, conv_head(trained.model), trained.config.model, tmp_path / "ptq_int8.tflite")
    for ex, facts in ((ptq, ptq_facts), qat_export):
        blob = ex.tflite_path.read_bytes()
        report = check_model(blob, BeatClassifier.from_file(ex.tflite_path), test.waves[:600], test.rr[:600])
        assert report.all_identical_reference, report.to_dict()
        assert report.identical_outputs >= 0.98 * report.beats  # LiteRT's builtin kernels: 1 LSB on a few
        assert 1024 < report.arena_bytes < 16 * 1024
        assert not facts.unsupported_ops and "FULLY_CONNECTED" not in facts.ops
