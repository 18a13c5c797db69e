"""The perturbation plug-ins on synthetic signals: each does what its name says, reproducibly."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sp_signal

from training.data.ecg_noise import qrs_peak_to_peak, scale_to_snr
from training.data.perturbations import SUITE, apply_chain, perturbation
from training.data.perturbed import MITDB_RAIL_MV

FS = 360.0


def synthetic_ecg(seconds: float = 60.0, fs: float = FS) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian 'QRS' spikes of 1.5 mV every 0.8 s on a flat baseline, and their sample indices."""
    n = int(seconds * fs)
    beats = np.arange(int(0.5 * fs), n - int(0.5 * fs), int(0.8 * fs))
    t = np.arange(n)
    x = np.zeros(n)
    for b in beats:
        x += 1.5 * np.exp(-0.5 * ((t - b) / (0.012 * fs)) ** 2)
    return x, beats


@pytest.mark.parametrize("spec", SUITE)
def test_every_suite_perturbation_is_seeded_and_keeps_the_beats(spec):
    x, beats = synthetic_ecg()
    a = perturbation(spec).apply(x, FS, beats, seed=3)
    b = perturbation(spec).apply(x, FS, beats, seed=3)
    np.testing.assert_array_equal(a.signal_mv, b.signal_mv)
    assert a.ann_sample.size == beats.size
    assert a.signal_mv.size == pytest.approx(x.size * a.fs_hz / FS, abs=2)
    assert perturbation(spec).name == spec or spec in ("none",)


def test_noise_is_scaled_to_the_requested_snr():
    x, beats = synthetic_ecg()
    pp = qrs_peak_to_peak(x, FS, beats)
    assert pp == pytest.approx(1.5, rel=0.02)
    for spec, snr in (("emg:12", 12.0), ("emg:0", 0.0), ("motion:6", 6.0)):
        noise = perturbation(spec).apply(x, FS, beats, seed=1).signal_mv - x
        measured = 10 * np.log10((pp ** 2 / 8) / np.var(noise))
        assert measured == pytest.approx(snr, abs=0.05), spec
    with pytest.raises(ValueError):
        scale_to_snr(np.zeros(10), 1.0, 6.0)


def test_nst_snr_follows_wfdb_nsts_definition():
    """nst's S (mean of the middle 90 % of QRS ranges +-50 ms) and N (mean of the middle 90 % of one-second RMS
    values, each about its own mean): a steady sine of known RMS gives its SNR exactly; a slow drift adds
    nothing (removed per second); a bursty noise of the same variance reads higher SNR than its variance
    says, since nst averages RMS values (so the suite's calibration is the harsher of the two)."""
    from training.data.ecg_noise import nst_snr_db

    x, beats = synthetic_ecg()
    pp = qrs_peak_to_peak(x, FS, beats)
    t = np.arange(x.size) / FS
    sine = 0.1 * np.sqrt(2) * np.sin(2 * np.pi * 10 * t)  # RMS 0.1 mV, whole cycles per second
    expected = 10 * np.log10((pp ** 2 / 8) / 0.01)
    assert nst_snr_db(x, sine, FS, beats) == pytest.approx(expected, abs=0.3)
    drift = 0.05 * np.sin(2 * np.pi * 0.05 * t)
    assert nst_snr_db(x, sine + drift, FS, beats) == pytest.approx(expected, abs=0.3)
    burst = sine * np.where((t // 10) % 2 == 0, np.sqrt(1.8), np.sqrt(0.2))  # same variance, in bursts
    assert nst_snr_db(x, burst, FS, beats) > expected + 0.3
    with pytest.raises(ValueError):
        nst_snr_db(x, sine[:10], FS, beats)


def test_emg_is_broadband_and_motion_is_in_the_qrs_band():
    x, beats = synthetic_ecg()
    emg = perturbation("emg:6").apply(x, FS, beats, seed=0).signal_mv - x
    motion = perturbation("motion:6").apply(x, FS, beats, seed=0).signal_mv - x
    f, p_emg = sp_signal.welch(emg, FS, nperseg=1024)
    _, p_mot = sp_signal.welch(motion, FS, nperseg=1024)
    assert p_emg[f > 20].sum() > 0.9 * p_emg.sum()
    assert p_mot[f < 15].sum() > 0.9 * p_mot.sum()


def test_different_seeds_give_different_noise():
    x, beats = synthetic_ecg()
    a = perturbation("emg:6").apply(x, FS, beats, seed=0).signal_mv
    b = perturbation("emg:6").apply(x, FS, beats, seed=1).signal_mv
    assert not np.allclose(a, b)


def test_offsets_polarity_and_gain():
    x, beats = synthetic_ecg()
    dc = perturbation("dc_start:-300").apply(x, FS, beats, 0).signal_mv
    assert dc[-1] - x[-1] == pytest.approx(-300.0, abs=0.01) and dc[0] - x[0] == pytest.approx(-330.0)
    steps = perturbation("dc_steps:300").apply(x, FS, beats, 0)
    jumps = np.flatnonzero(np.abs(np.diff(steps.signal_mv - x)) > 1e-9)
    assert jumps.size == len(steps.excluded) >= 1
    assert np.max(np.abs(steps.signal_mv - x)) <= 300.0
    np.testing.assert_array_equal(perturbation("invert").apply(x, FS, beats, 0).signal_mv, -x)
    np.testing.assert_allclose(perturbation("gain:0.2").apply(x, FS, beats, 0).signal_mv, 0.2 * x)


@pytest.mark.parametrize("fs_out", [128.0, 250.0, 500.0])
def test_resampling_maps_the_annotations_onto_the_peaks(fs_out):
    x, beats = synthetic_ecg()
    out = perturbation(f"resample:{fs_out:g}").apply(x, FS, beats, 0)
    assert out.fs_hz == pytest.approx(fs_out)
    # each mapped annotation sits within one sample of the resampled spike's maximum
    for a in out.ann_sample[1:-1]:
        lo = a - int(0.05 * fs_out)
        peak = lo + int(np.argmax(out.signal_mv[lo:a + int(0.05 * fs_out)]))
        assert abs(peak - a) <= 1


@pytest.mark.parametrize("freq", [50.0, 60.0])
def test_mains_hum_sits_at_its_frequency(freq):
    x, beats = synthetic_ecg()
    hum = perturbation(f"mains:{freq:g}").apply(x, FS, beats, 0).signal_mv - x
    f, p = sp_signal.welch(hum, FS, nperseg=2048)
    assert abs(f[np.argmax(p)] - freq) < 0.5
    assert np.max(np.abs(hum)) <= 0.5 * 1.1 + 1e-9


def test_saturation_clips_at_the_rails_inside_excluded_bursts():
    x, beats = synthetic_ecg(120)
    out = perturbation("saturation").apply(x, FS, beats, 0)
    assert np.max(np.abs(out.signal_mv)) <= MITDB_RAIL_MV
    clipped = np.flatnonzero(np.abs(out.signal_mv) >= MITDB_RAIL_MV - 1e-9)
    assert clipped.size > 0
    inside = np.zeros(x.size, bool)
    for a, b in out.excluded:
        inside[a:b] = True
    assert inside[clipped].all()


@pytest.mark.parametrize("mode", ["flat", "rail", "nan"])
def test_lead_off_gaps(mode):
    x, beats = synthetic_ecg(200)
    out = perturbation(f"leadoff:{mode}").apply(x, FS, beats, 0)
    assert len(out.excluded) >= 2
    a, b = out.excluded[0]
    gap = out.signal_mv[a:b - int(FS)]
    assert gap.size >= 2 * FS
    if mode == "nan":
        assert np.isnan(gap).all() and np.isfinite(out.signal_mv[:a]).all()
    else:
        assert np.ptp(gap) == 0 and (mode == "flat" or gap[0] == MITDB_RAIL_MV)


def test_chain_carries_excluded_ranges_through_resampling():
    x, beats = synthetic_ecg(200)
    out = apply_chain(["leadoff:flat", "resample:250", "gain:0.2"], x, FS, beats, seed=2)
    assert out.fs_hz == 250.0
    first = perturbation("leadoff:flat").apply(x, FS, beats, 2 * 1009).excluded[0]
    assert out.excluded[0][0] == int(first[0] * 250 / FS)


def test_unknown_or_malformed_specs_say_what_to_fix():
    with pytest.raises(ValueError, match="known kinds"):
        perturbation("thunder:3")
    with pytest.raises(ValueError, match="not a number"):
        perturbation("emg:loud")
    with pytest.raises(ValueError, match="flat, rail or nan"):
        perturbation("leadoff:sideways")
    with pytest.raises(ValueError, match="positive"):
        perturbation("gain:0")
