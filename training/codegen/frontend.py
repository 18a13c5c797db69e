"""``pw_frontend_config.h``: the constants of the C streaming front-end (firmware/core/pw_frontend.c) for
one model: its signal pipeline (band-pass sections, window geometry), its RR standardisation and its
input quantization, so the front-end writes the model's int8 inputs directly (with the template
features' geometry and tracking constants for a model trained on "rr+template"); and those of the C R-peak
detector (firmware/core/pw_rpeak.c) at the model's sampling rate, from edge_runtime/rpeak.py's
``DetectorConfig``."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from edge_runtime.filtering import RestartRules, bandpass_sos
from edge_runtime.model_metadata import ModelMetadata
from edge_runtime.rpeak_config import DetectorConfig
from edge_runtime.signal_config import RR_FEATURE_NAMES
from edge_runtime.template_features import (
    ACCEPT_CORR,
    ACCEPT_CORR_Q16,
    FEATURE_SETS,
    FIXED_FEATURE_NAMES,
    RESTART_AFTER,
    TEMPLATE_BEATS,
    TemplateGeometry,
)
from edge_runtime.template_fixed import (
    TEMPLATE_EXTRA_BITS,
    WAVE_FRAC_BITS,
    quant_constants,
)
from training.codegen.emit import GENERATOR_VERSION
from training.codegen.quant import round_half_away

RR_FEATURE_COUNT = 7


def _sos_rows(sos: np.ndarray) -> str:
    """Second-order sections as C rows of Q30 integers (b0 b1 b2 a0 a1 a2)."""
    rows = []
    for section in sos:
        q = [round_half_away(float(v) * (1 << 30)) for v in section]
        rows.append("    {" + ", ".join(f"{v}LL" for v in q) + "}")
    return ",\n".join(rows)


def rpeak_config(det: DetectorConfig, adc_gain: float = 200.0) -> str:
    """The C detector's constants (``PW_RP_*``): the QRS filter of ``StreamingRPeakDetector`` (scipy's
    Butterworth design of ``qrs_order``, and the mains notches) and its time constants in samples, rounded as the Python detector rounds
    them (``DetectorConfig.samples``)."""
    if float(det.fs_hz) != int(det.fs_hz):
        raise ValueError("the C detector needs an integer sampling rate")
    if det.r_search_s[1] > 0:
        raise ValueError(f"r_search_s {det.r_search_s}: the C detector locates R when the energy peak is seen, so "
                         "the search window must end at or before it")
    r_before = -round(det.r_search_s[0] * det.fs_hz)
    r_after = -round(det.r_search_s[1] * det.fs_hz)
    integration = det.samples(det.integration_s)
    if r_before + 2 > 128 or integration + 2 > 64:
        raise ValueError("the C detector keeps 128 input and 64 derivative samples: r_search_s or integration_s "
                         f"is too long at {det.fs_hz} Hz (raise PW_RP_X_RING / PW_RP_D_RING)")
    sos = det.qrs_sos()
    # the C heights are sums of squared Q8 derivatives in ADC units, the Python ones means of squared
    # (fs / 8) x derivatives in mV: C = Python x N x (2048 x gain / fs)^2
    min_height = math.ceil(det.min_height * integration * (2048.0 * adc_gain / det.fs_hz) ** 2)
    if float(det.artefact_ratio) != int(det.artefact_ratio):
        raise ValueError("the C detector needs an integer artefact_ratio")
    back = Fraction(det.searchback_rr).limit_denominator(1000)
    thr = _steps(det.threshold_fraction, 16, "threshold_fraction")
    attack = _steps(det.noise_attack, 8, "noise_attack")
    crest = 0 if det.min_crest is None else round(8 * det.min_crest)
    if det.min_crest is not None and crest != 8 * det.min_crest:
        raise ValueError(f"the C detector needs min_crest in steps of 1/8, got {det.min_crest}")
    crest_when = _steps(det.crest_when, 16, "crest_when")
    return (
        f"/* R-peak detector (edge_runtime/rpeak.py DetectorConfig at {det.fs_hz:g} Hz), in samples */\n"
        f"#define PW_RP_INTEGRATION {integration}u /* moving integration, {det.integration_s:g} s */\n"
        f"#define PW_RP_REFRACTORY {det.samples(det.refractory_s)}u /* {det.refractory_s:g} s */\n"
        f"#define PW_RP_T_WAVE {det.samples(det.t_wave_s)}u /* slope test within {det.t_wave_s:g} s */\n"
        f"#define PW_RP_LEARNING {det.samples(det.learning_s)}u /* {det.learning_s:g} s */\n"
        f"#define PW_RP_R_BEFORE {r_before}u /* R searched from {det.r_search_s[0]:g} s */\n"
        f"#define PW_RP_R_AFTER {r_after}u /* to {det.r_search_s[1]:g} s of the energy peak */\n"
        f"#define PW_RP_SEARCHBACK_NUM {back.numerator} /* search back after {det.searchback_rr:g} mean RR */\n"
        f"#define PW_RP_SEARCHBACK_DEN {back.denominator}\n"
        f"#define PW_RP_THR_NUM {thr} /* threshold1 = npk + {det.threshold_fraction:g} (spk - npk) */\n"
        f"#define PW_RP_THR_DEN 16\n"
        f"#define PW_RP_NOISE_ATTACK {attack} /* eighths: weight of a noise peak above the noise level */\n"
        f"#define PW_RP_CREST {crest} /* eighths: smallest crest factor of a QRS in noise (0: no test) */\n"
        f"#define PW_RP_CREST_WHEN {crest_when} /* sixteenths: the test applies while npk > this x spk */\n"
        f"#define PW_RP_ARTEFACT {int(det.artefact_ratio)} /* a candidate above this x the signal level */\n"
        f"#define PW_RP_BLANK {det.samples(det.artefact_blank_s)}u /* {det.artefact_blank_s:g} s after an artefact */\n"
        f"#define PW_RP_RESTARTS {det.artefact_restarts}u /* artefacts that restart one re-learning */\n"
        f"#define PW_RP_FLAT {det.samples(det.flat_s)}u /* no candidate for {det.flat_s:g} s: a flat line */\n"
        f"#define PW_RP_RELEARN {det.samples(det.relearn_s)}u /* no QRS for {det.relearn_s:g} s: learn again */\n"
        f"#define PW_RP_MIN_HEIGHT {min_height}LL /* smallest candidate ({det.min_height:g} in rpeak.py's scale) */\n"
        f"#define PW_RP_SECTIONS {len(sos)}\n"
        f"/* QRS band-pass {det.qrs_band_hz[0]:g}-{det.qrs_band_hz[1]:g} Hz, order {det.qrs_order}, low-pass "
        f"{det.qrs_lowpass_hz or 'none'} Hz, then mains notches "
        f"{'/'.join(f'{f:g}' for f in det.mains_hz)} Hz: b0 b1 b2 a0 a1 a2 in Q30 */\n"
        f"static const int64_t pw_rp_sos_q30[{len(sos)}][6] = {{\n" + _sos_rows(sos) + "\n};\n")


def _steps(value: float, per_unit: int, name: str) -> int:
    """``value`` in 1/``per_unit`` steps (the C detector compares with integer cross-products)."""
    steps = value * per_unit
    if steps != round(steps) or not 0 <= steps <= per_unit:
        raise ValueError(f"the C detector needs {name} in [0, 1] in steps of 1/{per_unit}, got {value}")
    return round(steps)


def _port(meta: ModelMetadata, rank: int):
    ports = [p for p in meta.inputs if len(p.shape) == rank]
    if len(ports) != 1 or ports[0].dtype != "int8":
        raise ValueError(f"the model needs one int8 input of rank {rank} (wave: 3, RR: 2)")
    return ports[0]


def _layout(meta: ModelMetadata) -> str:
    """The model's input features (``template_features.FEATURE_SETS``, named in its metadata) as C indices,
    and the template geometry when the set has template features: the one input contract, laid out."""
    names = tuple(meta.rr_feature_names)
    if names not in FEATURE_SETS.values() or names[:RR_FEATURE_COUNT] != RR_FEATURE_NAMES:
        raise ValueError(f"the C front-end computes the feature sets {sorted(FEATURE_SETS)}; this model expects "
                         f"{names}")
    template = names != RR_FEATURE_NAMES
    lines = [f"#define PW_FE_FEATURES {len(names)} /* model input features: {', '.join(names)} */",
             f"#define PW_FE_TEMPLATE {int(template)} /* template features (edge_runtime/template_features.py) */"]
    lines += [f"#define PW_FE_I_{name.upper()} {i}" for i, name in enumerate(names) if i >= RR_FEATURE_COUNT]
    if template:
        first = names.index(FIXED_FEATURE_NAMES[0])
        if names[first:first + len(FIXED_FEATURE_NAMES)] != FIXED_FEATURE_NAMES:
            raise ValueError("the integer template features must be consecutive model inputs")
        g = TemplateGeometry.of(meta.signal)
        lines += [f"#define PW_TM_FIRST {first} /* input index of {FIXED_FEATURE_NAMES[0]} */",
                  f"#define PW_TM_QRS_BEGIN {g.qrs_begin}\n#define PW_TM_QRS_END {g.qrs_end}",
                  f"#define PW_TM_P_END {g.p_end}\n#define PW_TM_T_BEGIN {g.t_begin}",
                  f"#define PW_TM_WAVE_FRAC_BITS {WAVE_FRAC_BITS}\n#define PW_TM_EXTRA_BITS {TEMPLATE_EXTRA_BITS}",
                  f"#define PW_TM_ACCEPT_Q16 {ACCEPT_CORR_Q16} /* QRS correlation {ACCEPT_CORR:g} */",
                  f"#define PW_TM_BEATS {TEMPLATE_BEATS} /* average over about this many beats */",
                  f"#define PW_TM_RESTART {RESTART_AFTER} /* rejected beats in a row that restart it */"]
    return "\n".join(lines) + "\n"


def frontend_config(meta: ModelMetadata, adc_gain: float = 200.0, detector: DetectorConfig | None = None) -> str:
    """C header text. ``adc_gain``: ADC units per mV of the device's input (MIT-BIH: 200); ``detector``: the R-peak
    detector's configuration (default: ``DetectorConfig`` at the model's rate)."""
    cfg = meta.signal
    if cfg.amplitude_normalisation != "rpeak_median":
        raise ValueError("the C front-end implements amplitude_normalisation='rpeak_median' only")
    layout = _layout(meta)
    if float(cfg.fs_hz) != int(cfg.fs_hz):
        raise ValueError("the C front-end needs an integer sampling rate")
    wave, rr = _port(meta, 3), _port(meta, 2)
    window = (cfg.window_before + cfg.window_after) // cfg.decimation
    if wave.shape[1] != window:
        raise ValueError(f"wave input has {wave.shape[1]} samples, the signal config makes {window}")
    sos = bandpass_sos(cfg)
    rules = RestartRules()
    # the smallest amplitude divisor: 1e-3 mV (beat_windows.amplitude_scales) in Q16 ADC units, times 2
    amp_floor2 = math.ceil(2 * 1e-3 * adc_gain * (1 << 16))
    if rr.shape[1] != len(meta.rr_feature_names):
        raise ValueError(f"RR input has {rr.shape[1]} values, the metadata names {len(meta.rr_feature_names)}")
    mean_q16, inv_q16, clip_q = zip(*(quant_constants(m, s, rr.scale) for m, s in zip(meta.rr_mean, meta.rr_std)))
    n = len(mean_q16)
    return (
        f"/* Generated by pulsewire codegen {GENERATOR_VERSION} from model sha256 {meta.model_sha256}: the "
        "front-end constants of this model, do not edit (`pulsewire firmware generate --frontend`). */\n"
        "#ifndef PW_FRONTEND_CONFIG_H\n#define PW_FRONTEND_CONFIG_H\n\n#include <stdint.h>\n\n"
        f"#define PW_FE_FS_HZ {int(cfg.fs_hz)}\n#define PW_FE_ADC_GAIN {adc_gain:g} /* ADC units per mV */\n"
        f"#define PW_FE_SECTIONS {len(sos)}\n"
        f"#define PW_FE_WINDOW_BEFORE {cfg.window_before}u\n#define PW_FE_WINDOW_AFTER {cfg.window_after}u\n"
        f"#define PW_FE_DECIMATION {cfg.decimation}u\n#define PW_FE_WINDOW {window}\n"
        f"#define PW_FE_AMP_BEATS {cfg.amplitude_beats}\n#define PW_FE_AMP_FLOOR2 {amp_floor2}\n"
        f"#define PW_FE_WAVE_CLIP {round_half_away(cfg.wave_clip)} /* in R amplitudes */\n"
        f"#define PW_FE_WAVE_INV_SCALE_Q16 {round_half_away(65536.0 / wave.scale)}LL\n"
        f"#define PW_FE_WAVE_ZERO_POINT {wave.zero_point}\n"
        f"#define PW_FE_RR_LOCAL {cfg.rr_local_beats}u\n#define PW_FE_RR_LONG {cfg.rr_long_beats}u\n"
        f"#define PW_FE_RR_ZERO_POINT {rr.zero_point}\n" + layout +
        "/* band-pass restarts (edge_runtime/filtering.py RestartRules): a step of more than JUMP ADC units "
        "within JUMP_LAG samples, or the first change after FLAT_RUN samples within FLAT_TOL of their "
        "predecessor */\n"
        f"#define PW_FE_JUMP_LAG {rules.jump_lag(cfg.fs_hz)}u\n"
        f"#define PW_FE_JUMP {math.floor(rules.jump_mv * adc_gain)}LL /* {rules.jump_mv:g} mV */\n"
        f"#define PW_FE_FLAT_RUN {rules.flat_run(cfg.fs_hz)}u /* {rules.flat_s:g} s */\n"
        f"#define PW_FE_FLAT_TOL {math.floor(rules.flat_tol_mv * adc_gain)}LL /* {rules.flat_tol_mv:g} mV */\n\n"
        f"/* band-pass {cfg.band_low_hz}-{cfg.band_high_hz} Hz, order {cfg.filter_order}: b0 b1 b2 a0 a1 a2 in Q30 */\n"
        f"static const int64_t pw_fe_sos_q30[{len(sos)}][6] = {{\n" + _sos_rows(sos) + "\n};\n"
        "/* input features: training mean (Q16), 1 / (std * input scale) (Q16), clip at 6 standard deviations */\n"
        f"static const int64_t pw_fe_rr_mean_q16[{n}] = {{{', '.join(f'{v}LL' for v in mean_q16)}}};\n"
        f"static const int64_t pw_fe_rr_inv_q16[{n}] = {{{', '.join(f'{v}LL' for v in inv_q16)}}};\n"
        f"static const int64_t pw_fe_rr_clip_q[{n}] = {{{', '.join(f'{v}LL' for v in clip_q)}}};\n\n"
        + rpeak_config(detector or DetectorConfig(fs_hz=float(cfg.fs_hz)), adc_gain) + "\n#endif\n")
