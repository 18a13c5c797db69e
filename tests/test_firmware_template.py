"""The C template features (firmware/core/pw_template.c, integers) against the Python edge runtime's
(edge_runtime/template_features.py) on real MIT-BIH beats: the same Q16 features and the same int8 model
inputs, beat for beat, and the front-end configuration a template model generates."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from edge_runtime.model_metadata import ModelMetadata, TensorQuant
from edge_runtime.signal_config import SignalConfig
from edge_runtime.template_features import FEATURE_SETS, FIXED_FEATURE_NAMES
from tests.conftest import ROOT
from training.codegen import toolchain
from training.data.beat_dataset import record_beats
from training.data.feature_sets import lead_sequences, with_feature_set

pytestmark = pytest.mark.firmware
NAMES = FEATURE_SETS["rr+template"]


def _metadata(rr: np.ndarray, cfg: SignalConfig) -> ModelMetadata:
    """An int8 rr+template model's metadata with the excerpt's own statistics (no model needs training)."""
    window = cfg.window_length
    return ModelMetadata("t", ("N", "S", "V", "F", "Q"), cfg, NAMES, tuple(float(v) for v in rr.mean(axis=0)),
                         tuple(float(v) for v in rr.std(axis=0) + 1e-3), "int8",
                         (TensorQuant("wave", (1, window, 1), "int8", 8.0 / 255, 0),
                          TensorQuant("rr", (1, len(NAMES)), "int8", 12.0 / 255, -1)),
                         (TensorQuant("out", (1, 5), "int8", 1 / 256, -128),), "", "")


@pytest.fixture(scope="module")
def beats(excerpt_dir):
    """Beats of the MIT-BIH excerpt of record 208 (normal and many ventricular beats)."""
    cfg = SignalConfig()
    return with_feature_set(record_beats(excerpt_dir, "208x", cfg), "rr+template", cfg), cfg


def test_c_template_features_equal_python_bit_for_bit(beats, tmp_path):
    from tools.firmware_template_bench import build, python_features, run_host
    from training.codegen.frontend import frontend_config

    toolchain.need("gcc")
    data, cfg = beats
    meta = _metadata(data.rr, cfg)
    (tmp_path / "pw_frontend_config.h").write_text(frontend_config(meta))
    exe = build(tmp_path, tmp_path / "run_template")
    order = np.concatenate(lead_sequences(data))
    starts = np.zeros(len(order), bool)
    starts[np.cumsum([0] + [len(s) for s in lead_sequences(data)])[:-1]] = True
    waves = data.waves[order]
    c16, c8 = run_host(exe, waves, starts, tmp_path)
    py16, py8 = python_features(waves, starts, meta)
    assert len(waves) > 300 and starts.sum() >= 1
    np.testing.assert_array_equal(c16, py16)
    np.testing.assert_array_equal(c8, py8)
    # the features the model is trained on are these integers / 2^16, and the edge classifier's int8 inputs
    first = NAMES.index(FIXED_FEATURE_NAMES[0])
    np.testing.assert_array_equal(data.rr[order, first:first + len(FIXED_FEATURE_NAMES)], c16 / 65536.0)
    assert len(np.unique(c8[:, 0])) > 5 and np.ptp(c8, axis=0).min() > 0  # the inputs vary: a test that can fail


def test_template_config_lays_out_the_model_inputs_and_builds_warning_free(beats, tmp_path):
    from tools.firmware_frontend_bench import FRONTEND_SOURCES
    from training.codegen.frontend import frontend_config

    data, cfg = beats
    header = frontend_config(_metadata(data.rr, cfg))
    assert f"#define PW_FE_FEATURES {len(NAMES)}" in header and "#define PW_FE_TEMPLATE 1" in header
    assert f"#define PW_TM_FIRST {NAMES.index('tmpl_corr_qrs')}" in header
    assert f"#define PW_FE_I_LOCAL_OVER_LONG {NAMES.index('local_over_long')}" in header
    (tmp_path / "pw_frontend_config.h").write_text(header)
    srcs = [str(ROOT / "firmware/core" / s) for s in FRONTEND_SOURCES] + [str(ROOT / "firmware/tests/run_frontend.c")]
    build = subprocess.run(["gcc", *toolchain.WARNINGS, "-O2", f"-I{ROOT / 'firmware/core'}", f"-I{tmp_path}", *srcs,
                            "-o", str(tmp_path / "fe")], capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr


def test_c_frontend_with_template_features_matches_python_within_one_lsb(excerpt_dir, tmp_path):
    """The whole C path (ADC samples, annotated R-peaks -> band-pass, windows, RR and template features, int8)
    against the Python pipeline on the excerpt: every input within 1 LSB, the template inputs identical on
    >= 99 % of the beats (measured 99.7-100 %; a 1-LSB wave difference of the fixed-point filter can move a
    feature across a rounding step)."""
    import wfdb

    from edge_runtime.beat_windows import beat_windows
    from edge_runtime.filtering import bandpass
    from edge_runtime.int8_io import Port, quantize
    from edge_runtime.rr_features import rr_features, standardise_rr
    from edge_runtime.template_features import model_features
    from edge_runtime.template_fixed import quantize_fixed_columns
    from tools.firmware_frontend_bench import BEAT_SYMBOLS, FRONTEND_SOURCES
    from training.codegen.frontend import frontend_config

    cfg = SignalConfig()
    rec = wfdb.rdrecord(str(excerpt_dir / "208x"), physical=False)
    ann = wfdb.rdann(str(excerpt_dir / "208x"), "atr")
    lead = rec.sig_name.index("MLII")
    adc = rec.d_signal[:, lead].astype(np.int32)
    peaks = np.array([s for s, c in zip(ann.sample, ann.symbol) if c in BEAT_SYMBOLS], np.int64)
    windows, wi = beat_windows(bandpass((adc - rec.baseline[lead]) / rec.adc_gain[lead], cfg), peaks, cfg)
    rr, ri = rr_features(peaks, cfg)
    both = np.intersect1d(wi, ri)
    feats = model_features(windows[np.searchsorted(wi, both)], rr[np.searchsorted(ri, both)], NAMES, cfg)
    meta = _metadata(feats, cfg)
    (tmp_path / "pw_frontend_config.h").write_text(frontend_config(meta))
    srcs = [str(ROOT / "firmware/core" / s) for s in FRONTEND_SOURCES] + [str(ROOT / "firmware/tests/run_frontend.c")]
    build = subprocess.run(["gcc", *toolchain.WARNINGS, "-O2", f"-I{ROOT / 'firmware/core'}", f"-I{tmp_path}", *srcs,
                            "-o", str(tmp_path / "fe")], capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr
    with open(tmp_path / "in.bin", "wb") as f:
        np.array([len(adc), len(peaks)], np.uint32).tofile(f)
        adc.tofile(f)
        peaks.astype(np.uint32).tofile(f)
    subprocess.run([str(tmp_path / "fe"), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True,
                   capture_output=True, timeout=60)
    c_in = np.fromfile(tmp_path / "out.bin", np.uint8).reshape(-1, 4 + cfg.window_length + len(NAMES))
    c_rr = c_in[:, 4 + cfg.window_length:].view(np.int8)
    port, mean, std = meta.inputs[1], np.asarray(meta.rr_mean, np.float32), np.asarray(meta.rr_std, np.float32)
    py = quantize(standardise_rr(feats, mean, std), Port(0, np.dtype(np.int8), port.scale, port.zero_point))
    first = NAMES.index(FIXED_FEATURE_NAMES[0])
    fixed = list(range(first, first + len(FIXED_FEATURE_NAMES)))
    py = quantize_fixed_columns(feats, py, fixed, mean, std, port.scale, port.zero_point)[:len(c_rr)]
    assert len(c_rr) >= len(feats) - 1 > 300
    diff = np.abs(py.astype(int) - c_rr)
    assert diff.max() <= 1
    assert np.all((diff[:, fixed] == 0).mean(axis=0) >= 0.99)
