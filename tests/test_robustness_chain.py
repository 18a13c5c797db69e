"""The streaming chain under the perturbations a wearable meets, on real ECG (the MIT-BIH excerpt).

The chain is the device's: invalid-sample guard, resampler to the model's rate, BeatStream (band-pass,
R-peak detector, signal quality); detection is scored on every detected R peak against the annotations.
"""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.aami import aami_labels
from edge_runtime.beat_stream import BeatStream, offline_beats
from edge_runtime.resample import StreamingResampler
from edge_runtime.sample_guard import SampleGuard
from edge_runtime.scoring import score_detection
from training.data.mitdb import load_record
from training.data.perturbations import SUITE, apply_chain, perturbation


@pytest.fixture(scope="module")
def excerpt(excerpt_dir):
    return load_record(excerpt_dir, "208x")


def _chain(x: np.ndarray, fs_hz: float, chunk: int | None = None, seed: int = 0):
    """The device chain in chunks (fixed size, or random sizes 1..3000 from ``seed``): R peaks in the
    input's sample numbering, the emitted beats and the stream."""
    guard, resampler, stream = SampleGuard(), StreamingResampler(fs_hz, 360.0), BeatStream()
    peaks: list[int] = []
    stream.on_peak = peaks.append
    beats, rng, i = [], np.random.default_rng(seed), 0
    while i < x.size:
        n = chunk or int(rng.integers(1, 3000))
        clean, _ = guard.process(x[i:i + n])
        beats += stream.process(resampler.process(clean))
        i += n
    beats += stream.flush()
    stream.source_guard = guard  # the runtime's guard, before the resampler: it counts the invalid samples
    return resampler.to_input_index(np.asarray(peaks, np.int64)), beats, stream


def _score(rec, case, peaks):
    _, pos = aami_labels(rec.ann_symbol)
    return score_detection(case.ann_sample[pos], peaks, case.fs_hz, case.excluded)


#: What the chain must keep on this excerpt of record 208 (PVC-rich; 180 s), per perturbation: the issue's
#: 99.5 % where the signal still carries the beats, measured floors (as regression guards) for noise at
#: 6 and 0 dB, where no detector keeps them, and for 2 mV of baseline wander (the R location, the largest
#: |deflection| of the band-passed signal, follows the residual wander on some beats of 208: a known limit,
#: docs/robustness.md has the whole-database numbers).
#: wander:2 was 0.985 / 0.985 before the detector's noise rules (20 Hz low-pass, noise attack 3/8): on this
#: excerpt 7 of 307 beats are now reported more than 150 ms away from their annotation under 2 mV of wander
#: (7 FN and 7 FP, 97.7 %), for fewer false beats under muscle and motion noise (docs/robustness.md,
#: "Noise-adaptive detection"; on all 22 DS2 records wander:2 scores 99.76 / 99.85).
#: motion:6 Se was 0.92 before the QRS-shape test (session 9; docs/robustness.md "QRS-shape test in noise"): on
#: this excerpt it trades Se 93.2 -> 91.5 % for +P 81.3 -> 85.4 % at 6 dB, and lifts +P at 12 dB 94.4 -> 98.4 %
#: (floor 0.93 -> 0.97) with Se unchanged (98.7 %).
FLOORS = {"wander:2": (0.975, 0.975), "emg:6": (0.97, 0.90), "emg:0": (0.85, 0.65), "motion:6": (0.91, 0.75), "motion:0": (0.75, 0.55),
          "motion:12": (0.97, 0.97), "emg:12": (0.985, 0.97)}


@pytest.mark.parametrize("spec", SUITE)
def test_the_detector_finds_the_beats_under_each_perturbation(spec, excerpt):
    case = perturbation(spec).apply(excerpt.signal_mv, excerpt.fs_hz, excerpt.ann_sample, seed=208)
    peaks, _, _ = _chain(case.signal_mv, case.fs_hz, chunk=int(case.fs_hz))
    score = _score(excerpt, case, peaks)
    se, ppv = FLOORS.get(spec, (0.995, 0.995))
    assert score.sensitivity >= se and score.positive_predictivity >= ppv, score.to_dict()


@pytest.mark.parametrize("specs", [["resample:250", "dc_start:300"], ["resample:128", "dc_start:-300"],
                                   ["dc_start:300"]])
def test_a_dc_offset_at_start_does_not_blind_the_chain(specs, excerpt):
    """The issue's failure: a 250 Hz recording that starts with an electrode offset found no beat at all
    (the resampler's FIR started from zero, a step of hundreds of mV that the detector learned as its level)."""
    case = apply_chain(specs, excerpt.signal_mv, excerpt.fs_hz, excerpt.ann_sample, seed=1)
    resampler, stream = StreamingResampler(case.fs_hz, 360.0), BeatStream()
    step = int(case.fs_hz)
    beats = [b for i in range(0, case.signal_mv.size, step)
             for b in stream.process(resampler.process(case.signal_mv[i:i + step]))] + stream.flush()
    # scored on the beats the stream emits (the first and last have no RR neighbour: 2 of ~300 missing)
    score = _score(excerpt, case, resampler.to_input_index(np.asarray([b.sample for b in beats], np.int64)))
    assert score.sensitivity >= 0.99 and score.positive_predictivity >= 0.995, score.to_dict()


def test_dc_steps_and_lead_off_make_the_chain_learn_again(excerpt):
    """Steps of up to 300 mV every ~20 s and NaN gaps: the chain recovers after each and counts why."""
    case = apply_chain(["dc_steps:300"], excerpt.signal_mv, excerpt.fs_hz, excerpt.ann_sample, seed=3)
    x = case.signal_mv.copy()
    steps = perturbation("dc_steps:300").__class__(300.0, every_s=20.0).apply(x, 360.0, case.ann_sample, 4)
    gaps = perturbation("leadoff:nan").__class__("nan", every_s=45.0).apply(steps.signal_mv, 360.0, case.ann_sample, 5)
    peaks, _, stream = _chain(gaps.signal_mv, 360.0, chunk=90)
    from training.data.perturbed import Perturbed

    merged = Perturbed(gaps.signal_mv, 360.0, case.ann_sample, steps.excluded + gaps.excluded)
    score = _score(excerpt, merged, peaks)
    # a step every 20 s and a gap every 45 s: the beats of the second after each recovery are lost
    assert score.sensitivity >= 0.98 and score.positive_predictivity >= 0.99, score.to_dict()
    rec = stream.recoveries()
    assert rec["filter_restarts"] >= len(steps.excluded) and rec["flat_lines"] >= 1 and rec["lead_off_gaps"] >= 1
    assert stream.source_guard.invalid == int(np.isnan(gaps.signal_mv).sum()) > 0


@pytest.mark.parametrize("specs", [["dc_steps:300", "leadoff:nan", "emg:12"], ["resample:250", "saturation"]])
def test_streaming_is_independent_of_chunking_under_perturbations(specs, excerpt):
    case = apply_chain(specs, excerpt.signal_mv, excerpt.fs_hz, excerpt.ann_sample, seed=7)
    runs = [_chain(case.signal_mv, case.fs_hz, seed=s) for s in (0, 1)] + [_chain(case.signal_mv, case.fs_hz, 7)]
    assert len(runs[0][1]) > 150
    first_peaks, first_beats, _ = runs[0]
    for peaks, beats, _ in runs[1:]:
        np.testing.assert_array_equal(peaks, first_peaks)
        assert [b.sample for b in beats] == [b.sample for b in first_beats]
        np.testing.assert_array_equal(np.stack([b.wave for b in beats]), np.stack([b.wave for b in first_beats]))
        # the resampler's FIR sums in another order per chunking (float rounding): quality equal to 1e-9
        assert [b.quality.usable for b in beats] == [b.quality.usable for b in first_beats]
        np.testing.assert_allclose([b.quality.index for b in beats], [b.quality.index for b in first_beats],
                                   atol=1e-9)


def test_stream_still_equals_the_batch_reference_on_a_clean_record(excerpt):
    peaks, ref = offline_beats(excerpt.signal_mv)
    _, beats, _ = _chain(excerpt.signal_mv, 360.0, seed=3)
    assert [b.sample for b in beats] == list(peaks[ref.beat_index])
    np.testing.assert_array_equal(np.stack([b.wave for b in beats]), ref.waves)


@pytest.mark.parametrize("kind", ["white", "emg", "motion", "mains", "flat", "rail", "nan"])
def test_quality_marks_noise_and_lead_off_unusable(kind):
    n, rng = 360 * 120, np.random.default_rng(11)
    x = _no_ecg(kind, n, rng)
    _, beats, stream = _chain(x, 360.0, chunk=360)
    usable = [b for b in beats if b.quality.usable]
    assert len(usable) <= 0.01 * max(len(beats), 1)
    if kind in ("flat", "rail", "nan"):
        assert stream.quality.lead_off_s >= 100


def _no_ecg(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Input without any heart in it: noise of several kinds, or an electrode off (flat, rail, invalid)."""
    from scipy import signal as sp_signal

    if kind == "flat":
        return np.full(n, 0.37)
    if kind == "rail":
        return np.full(n, 5.12)
    if kind == "nan":
        return np.full(n, np.nan)
    if kind == "mains":
        return 0.5 * np.sin(2 * np.pi * 50 * np.arange(n) / 360) + 0.02 * rng.standard_normal(n)
    band = {"white": None, "emg": (20, 150), "motion": (0.5, 12)}[kind]
    x = rng.standard_normal(n)
    if band:
        x = sp_signal.sosfilt(sp_signal.butter(4, band, btype="bandpass", fs=360, output="sos"), x)
    return 0.5 * x / np.std(x)


def test_quality_keeps_clean_ecg_usable(excerpt):
    _, beats, stream = _chain(excerpt.signal_mv, 360.0, chunk=360)
    assert np.mean([b.quality.usable for b in beats]) >= 0.97
    assert stream.quality.lead_off_s == 0


def test_a_beat_reported_at_the_step_into_a_lead_off_gap_still_counts(excerpt):
    """The suite's scoring (tools.robustness.scored_matches) on the real annotations of the excerpt: the QRS
    right before the electrode comes off is reported at the step to the rail, a few samples inside the gap
    (excluded); it is that scored beat's detection, not a miss plus an ignored peak. A detection matched to a
    beat inside the gap counts neither way; an unmatched one inside the gap is ignored, outside it is false."""
    from tools.robustness import scored_matches

    _, pos = aami_labels(excerpt.ann_symbol)
    ref = excerpt.ann_sample[pos]
    k = 100
    gap = (int(ref[k]) + 10, int(ref[k + 3]) + 20)  # beats k+1..k+3 lie in the gap
    det = ref.copy()
    det[k] = ref[k] + 30  # inside the gap, 83 ms after the beat
    extra = np.array([gap[0] + 5, int(ref[k + 5]) + 150])  # an artefact in the gap, a false beat after it
    det = np.sort(np.concatenate([det, extra]))
    mr, _, n_ref, n_det = scored_matches(ref, det, 54, [gap])
    assert n_ref == ref.size - 3 and k in mr
    assert mr.size == n_ref  # every scored beat found
    assert n_det - mr.size == 1  # only the peak outside the gap is false


def test_the_qrs_band_order_is_one_setting_for_python_and_the_generated_c():
    """``DetectorConfig.qrs_order``: the Python filter and the C detector's generated sections follow it;
    the default stays Pan & Tompkins' first order (docs/robustness.md: order 2 measured on DS1, not adopted)."""
    from edge_runtime.rpeak import DetectorConfig
    from training.codegen.frontend import rpeak_config

    first, second = DetectorConfig(), DetectorConfig(qrs_order=2)
    # band, the 20 Hz low-pass, two notches
    assert first.qrs_order == 1 and len(first.qrs_sos()) == 4 and len(second.qrs_sos()) == 5
    assert "#define PW_RP_SECTIONS 5" in rpeak_config(second) and "order 2" in rpeak_config(second)
    assert "#define PW_RP_SECTIONS 4" in rpeak_config(first)
    assert len(DetectorConfig(qrs_lowpass_hz=None).qrs_sos()) == 3
    with pytest.raises(ValueError, match="qrs_order"):
        DetectorConfig(qrs_order=3)


def _ten_minute_scorer(mitdb_dir, record: str, spec: str):
    """The first 10 minutes of a record under ``spec`` (seeded by the record), band-passed once: a function
    scoring ``detect_rpeaks`` with a given ``DetectorConfig`` on it (EC57, the suite's exclusions)."""
    from edge_runtime.filtering import bandpass
    from edge_runtime.rpeak import detect_rpeaks
    from edge_runtime.signal_config import SignalConfig

    rec = load_record(mitdb_dir, record)
    n = int(600 * rec.fs_hz)
    ann = rec.ann_sample[rec.ann_sample < n]
    case = perturbation(spec).apply(rec.signal_mv[:n], rec.fs_hz, ann, seed=int(record))
    _, pos = aami_labels(rec.ann_symbol[:ann.size])
    x = bandpass(case.signal_mv, SignalConfig())
    return lambda cfg: score_detection(case.ann_sample[pos], detect_rpeaks(x, cfg), case.fs_hz, case.excluded)


@pytest.mark.parametrize(("spec", "record"), [("emg:12", "108"), ("motion:12", "124")])
def test_the_noise_rules_cut_false_beats_against_pan_tompkins_constants(spec, record, mitdb_dir):
    """DetectorConfig's noise rules (the noise level rises with weight 3/8 inside a burst, a 20 Hz low-pass
    after the QRS band) against Pan & Tompkins' constants (1/8, no low-pass) under 12 dB noise, on the first
    10 minutes of the DS1 record with the most false beats under that noise (108: low QRS amplitude; 124):
    at least a third fewer false beats, and no beat lost beyond one in a hundred."""
    from edge_runtime.rpeak import DetectorConfig

    score = _ten_minute_scorer(mitdb_dir, record, spec)
    new, old = score(DetectorConfig()), score(DetectorConfig(noise_attack=0.125, qrs_lowpass_hz=None))
    assert new.false_positives <= 2 / 3 * old.false_positives, (new.to_dict(), old.to_dict())
    assert new.true_positives >= old.true_positives - 0.01 * (old.true_positives + old.false_negatives)


def test_the_qrs_shape_test_reaches_the_c_detector_as_constants():
    """min_crest in eighths and crest_when in sixteenths become PW_RP_CREST / PW_RP_CREST_WHEN (0: no test);
    values the integer comparison cannot express are refused, not rounded."""
    from edge_runtime.rpeak import DetectorConfig
    from training.codegen.frontend import rpeak_config

    assert "#define PW_RP_CREST 32 " in rpeak_config(DetectorConfig())
    assert "#define PW_RP_CREST_WHEN 3 " in rpeak_config(DetectorConfig())
    assert "#define PW_RP_CREST 0 " in rpeak_config(DetectorConfig(min_crest=None))
    with pytest.raises(ValueError, match="min_crest"):
        rpeak_config(DetectorConfig(min_crest=4.1))
    with pytest.raises(ValueError, match="crest_when"):
        rpeak_config(DetectorConfig(crest_when=0.2))
    with pytest.raises(ValueError, match="min_crest"):
        DetectorConfig(min_crest=-1.0)


@pytest.mark.parametrize(("spec", "record"), [("motion:12", "106"), ("motion:12", "201"), ("none", "203")])
def test_the_qrs_shape_test_cuts_false_beats_in_noise_and_leaves_clean_mlii_alone(spec, record, mitdb_dir):
    """The crest-factor test (``DetectorConfig.min_crest``: in noise, a candidate below the signal level whose
    slope is spread out is no QRS) against the detector without it, on the first 10 minutes of DS1 records:
    under 12 dB electrode motion at least a third fewer false beats for at most one beat in a hundred lost
    (106: 206 -> 86 false beats, 201: 119 -> 65); on clean MLII of 203 (multiform PVCs, the DS1 record that
    lost beats under every other +P rule) no beat lost and no false beat added."""
    from edge_runtime.rpeak import DetectorConfig

    score = _ten_minute_scorer(mitdb_dir, record, spec)
    new, old = score(DetectorConfig()), score(DetectorConfig(min_crest=None))
    if spec == "none":
        assert new.true_positives >= old.true_positives and new.false_positives <= old.false_positives
        return
    assert new.false_positives <= 2 / 3 * old.false_positives, (new.to_dict(), old.to_dict())
    assert new.true_positives >= old.true_positives - 0.01 * (old.true_positives + old.false_negatives)


def test_the_suite_can_leave_out_what_the_quality_index_marked_unusable():
    """The EC57-style alternative score: a Q-labelled beat's RR interval (and 150 ms after it) is left out;
    the main score keeps every beat."""
    from tools.robustness import covered_samples, scored_matches, unusable_spans

    beats = np.array([100, 460, 820, 1180, 1540])
    spans = unusable_spans(beats, ["N", "Q", "Q", "N", "N"], 360.0)
    assert spans == [(101, 514), (461, 874)]
    assert covered_samples(spans) == 874 - 101  # overlapping spans count once
    ref = np.array([100, 460, 820, 1180, 1540])
    det = np.array([100, 300, 460, 820, 1180, 1540])  # one false beat, at 300, inside an unusable stretch
    _, _, n_ref, n_det = scored_matches(ref, det, 54, [])
    assert (n_ref, n_det) == (5, 6)
    mr, _, n_ref, n_det = scored_matches(ref, det, 54, spans)
    assert (n_ref, n_det, mr.size) == (3, 3, 3)  # 460 and 820 left out, and the false beat with them


def test_the_report_states_the_nst_snr_of_each_noise_case():
    """The Markdown report carries nst's SNR beside the suite's label for the additive noises, and only for them."""
    from tools.robustness import _nst_lines

    rows = {"motion:12": {"nst_snr_db": {"mean": 13.04, "min": 11.6, "max": 14.7}}, "none": {"nst_snr_db": None}}
    line = _nst_lines(rows)
    assert "motion:12 13.0 dB (11.6 to 14.7)" in line and "none" not in line
    assert _nst_lines({"none": {}}) == ""
