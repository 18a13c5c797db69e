"""The C streaming front-end (firmware/core/pw_frontend.c, fixed point) against the Python pipeline
(edge_runtime filtering, beat windows, RR features, quantization) on a whole real record."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from tests.conftest import ROOT
from training.codegen import toolchain

pytestmark = pytest.mark.firmware
BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")


@pytest.mark.parametrize("record", ["100", "232"])
def test_c_frontend_matches_python_inputs_within_one_lsb(record, mitdb_dir, exported, tmp_path):
    """Same record, same R-peaks (the annotations): the int8 wave windows and RR features the C front-end
    writes equal the Python pipeline's quantized inputs within 1 LSB everywhere and exactly on >= 99.9 %
    of the values (measured: 99.95-99.97 % wave, 99.96-99.99 % RR on records 100, 208, 232; the rest are
    rounding ties between fixed point and float). 232 has pauses of several seconds."""
    import wfdb

    from edge_runtime.beat_windows import beat_windows
    from edge_runtime.classifier import BeatClassifier
    from edge_runtime.filtering import bandpass
    from edge_runtime.rr_features import rr_features
    from tools.firmware_frontend_bench import FRONTEND_SOURCES
    from training.codegen.frontend import frontend_config

    toolchain.need("gcc")
    clf = BeatClassifier.from_file(exported["int8"].tflite_path)
    meta = clf.metadata
    (tmp_path / "pw_frontend_config.h").write_text(frontend_config(meta, 200.0))
    exe = tmp_path / "run_frontend"
    build = subprocess.run(["gcc", *toolchain.WARNINGS, "-O2", f"-I{ROOT / 'firmware/core'}", f"-I{tmp_path}",
                            *(str(ROOT / "firmware/core" / s) for s in FRONTEND_SOURCES),
                            str(ROOT / "firmware/tests/run_frontend.c"),
                            "-o", str(exe)], check=False, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    rec = wfdb.rdrecord(str(mitdb_dir / record), physical=False)
    ann = wfdb.rdann(str(mitdb_dir / record), "atr")
    lead = rec.sig_name.index("MLII")
    adc = rec.d_signal[:, lead].astype(np.int32)
    peaks = np.array([s for s, c in zip(ann.sample, ann.symbol) if c in BEAT_SYMBOLS], np.int64)
    with open(tmp_path / "in.bin", "wb") as f:
        np.array([len(adc), len(peaks)], np.uint32).tofile(f)
        adc.tofile(f)
        peaks.astype(np.uint32).tofile(f)
    run = subprocess.run([str(exe), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=False, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout
    raw = np.fromfile(tmp_path / "out.bin", np.uint8).reshape(-1, 4 + 100 + 7)
    c_peaks = raw[:, :4].copy().view(np.uint32).ravel()
    c_wave, c_rr = raw[:, 4:104].view(np.int8), raw[:, 104:].view(np.int8)

    mv = (adc - rec.baseline[lead]) / rec.adc_gain[lead]
    windows, wi = beat_windows(bandpass(mv, meta.signal), peaks, meta.signal)
    feats, ri = rr_features(peaks, meta.signal)
    both = np.intersect1d(wi, ri)
    qw, qr = clf.quantize_inputs(windows[np.searchsorted(wi, both)], feats[np.searchsorted(ri, both)])
    py_peaks = peaks[both]
    # every C beat is a Python beat; the stream's last beat waits for a successor that never comes
    assert len(c_peaks) >= len(py_peaks) - 1 and np.array_equal(c_peaks, py_peaks[:len(c_peaks)])
    dw = np.abs(qw[:len(c_peaks)].reshape(len(c_peaks), -1).astype(int) - c_wave)
    dr = np.abs(qr[:len(c_peaks)].astype(int) - c_rr)
    assert dw.max() <= 1 and dr.max() <= 1
    assert (dw == 0).mean() >= 0.999 and (dr == 0).mean() >= 0.999
