"""Beat-versus-template morphology features: how this beat differs from the patient's own dominant beat.

Across patients a ventricular beat of one person can look like a normal beat of another; what is stable is
that an ectopic beat looks unlike *that person's* usual beat (de Chazal 2004, Mondéjar-Guerra 2019). A
device can keep one running template of the dominant morphology (100 numbers) and compare every beat with
it: correlation of the QRS, of the P-wave and T-wave stretches, QRS energy and width against the template's,
and the mean absolute difference. Two RR ratios complete the set (post-RR and the local average against the
local and long averages). Batch code (training) and the stream both call ``TemplateTracker.features`` on
the beats of one lead in order, and the six morphology features are defined in integers
(``edge_runtime.template_fixed``), so the C firmware (firmware/core/pw_template.c) computes the same numbers
and the same int8 model inputs bit for bit; the two RR ratios are exact fractions in C like the RR features.

The tracker uses no labels: the template follows beats that match it (QRS correlation above
``ACCEPT_CORR``), so isolated ectopic beats do not pull it; after ``RESTART_AFTER`` rejected beats in a row
(the dominant rhythm changed, or the first beats were ectopic) it starts again from the current beat.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime import template_fixed as fx
from edge_runtime.signal_config import RR_FEATURE_NAMES, SignalConfig

TEMPLATE_FEATURE_NAMES: tuple[str, ...] = (
    "tmpl_corr_qrs",
    "tmpl_corr_p",
    "tmpl_corr_t",
    "tmpl_log_energy_qrs",
    "tmpl_log_width_qrs",
    "tmpl_mean_abs_diff",
    "post_over_local",
    "local_over_long",
)

#: The template features defined in integers (``TemplateTracker.fixed_features``): exact Q16 values whose
#: int8 model inputs are quantized in integers too (``template_fixed.quantize_q16``), identically in C.
FIXED_FEATURE_NAMES: tuple[str, ...] = TEMPLATE_FEATURE_NAMES[:6]

#: Feature sets a model can be trained on, by name: the model input contract of training, the edge runtime
#: and the firmware (training/codegen/frontend.py lays the C inputs out from these names). "rr" is the
#: 7 RR features; "rr+template" adds the template features.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "rr": RR_FEATURE_NAMES,
    "rr+template": RR_FEATURE_NAMES + TEMPLATE_FEATURE_NAMES,
}

ACCEPT_CORR = 0.7  # a beat whose QRS correlates at least this well updates the template
ACCEPT_CORR_Q16 = round(ACCEPT_CORR * fx.Q16)
TEMPLATE_BEATS = 16  # exponential average over about this many accepted beats
RESTART_AFTER = 12  # rejected beats in a row after which the template starts again


def feature_set_named(name: str) -> tuple[str, ...]:
    try:
        return FEATURE_SETS[name]
    except KeyError:
        raise ValueError(f"unknown feature set {name!r}; choose one of {sorted(FEATURE_SETS)}") from None


def feature_set_of(names: tuple[str, ...] | list[str]) -> str:
    """The set name of a model's input feature names (its metadata's ``rr_feature_names``)."""
    for name, members in FEATURE_SETS.items():
        if tuple(names) == members:
            return name
    raise ValueError(f"feature names {list(names)} are none of the known sets {sorted(FEATURE_SETS)}")


@dataclass(frozen=True)
class TemplateGeometry:
    """Where the QRS, P-wave and T-wave stretches lie in the model's beat window (samples after
    decimation): ``[0, p_end)``, ``[qrs_begin, qrs_end)``, ``[t_begin, window)``. The C front-end gets
    these numbers from ``pw_frontend_config.h`` (training/codegen/frontend.py)."""

    window: int
    qrs_begin: int
    qrs_end: int
    p_end: int
    t_begin: int

    @classmethod
    def of(cls, cfg: SignalConfig) -> TemplateGeometry:
        fs = cfg.model_fs_hz
        centre = cfg.window_before // cfg.decimation
        half_qrs = round(0.08 * fs)
        return cls(cfg.window_length, centre - half_qrs, centre + half_qrs + 1,
                   max(2, centre - round(0.06 * fs)), min(cfg.window_length - 2, centre + round(0.10 * fs)))


class TemplateTracker:
    """The running dominant-beat template of one lead and the features of each beat against it, in the
    integers of ``edge_runtime.template_fixed`` (firmware/core/pw_template.c computes the same)."""

    def __init__(self, cfg: SignalConfig) -> None:
        g = TemplateGeometry.of(cfg)
        self._qrs = slice(g.qrs_begin, g.qrs_end)
        self._p = slice(0, g.p_end)
        self._t = slice(g.t_begin, g.window)
        self._template: np.ndarray | None = None  # Q(WAVE_FRAC_BITS + TEMPLATE_EXTRA_BITS) R amplitudes
        self._accepted = 0
        self._rejected = 0

    def features(self, wave: np.ndarray, rr_row: np.ndarray) -> np.ndarray:
        """Features of this beat (``wave`` as the model sees it, ``rr_row`` its ``RR_FEATURE_NAMES`` row)
        against the template of the beats before it; then the template learns from the beat. The six
        morphology features are exact Q16 values (``fixed / 2**16``, see ``fixed_features``)."""
        fixed = self.fixed_features(fx.wave_fixed(wave))
        post, local, long = (float(v) for v in rr_row[1:4])
        return np.concatenate([np.asarray(fixed, np.float64) / fx.Q16, [post / local, local / long]]).astype(
            np.float32)

    def fixed_features(self, a: np.ndarray) -> list[int]:
        """The six morphology features in Q16 of a beat window ``a`` in 1/64 R amplitudes (int64)."""
        a = np.asarray(a, np.int64)
        if self._template is None:
            self._template = a << fx.TEMPLATE_EXTRA_BITS
        t = self._template
        q, p, tt = self._qrs, self._p, self._t
        corr_qrs = fx.corr_q16(a[q], t[q])
        e_t = fx.div_round(int(np.dot(t[q], t[q])), 1 << (2 * fx.TEMPLATE_EXTRA_BITS))  # Q12, as a's energy
        energy = fx.ln_ratio_q16(int(np.dot(a[q], a[q])) + fx.ENERGY_EPS_Q12, e_t + fx.ENERGY_EPS_Q12)
        width = fx.div_round((fx.width_log2_q16(a[q]) - fx.width_log2_q16(t[q])) * fx.LN2_Q16, fx.Q16)
        diff = int(np.abs((a << fx.TEMPLATE_EXTRA_BITS) - t).sum())  # Q14 R amplitudes, summed
        mad = fx.div_round(diff << (16 - fx.WAVE_FRAC_BITS - fx.TEMPLATE_EXTRA_BITS), a.size)
        out = [corr_qrs, fx.corr_q16(a[p], t[p]), fx.corr_q16(a[tt], t[tt]), energy, width, mad]
        self._learn(a, corr_qrs)
        return out

    def _learn(self, a: np.ndarray, corr_qrs: int) -> None:
        if corr_qrs >= ACCEPT_CORR_Q16 or self._accepted == 0:
            self._accepted += 1
            rate = min(self._accepted, TEMPLATE_BEATS)
            step = (a << fx.TEMPLATE_EXTRA_BITS) - self._template
            self._template = self._template + fx.div_round_array(step, rate)  # ties away from zero, as pw_div_round
            self._rejected = 0
            return
        self._rejected += 1
        if self._rejected >= RESTART_AFTER:
            self._template = a << fx.TEMPLATE_EXTRA_BITS
            self._accepted, self._rejected = 1, 0


def template_features(waves: np.ndarray, rr: np.ndarray, cfg: SignalConfig) -> np.ndarray:
    """Template features of consecutive beats of one lead (rows in time order): ``(n, 8)`` float32."""
    tracker = TemplateTracker(cfg)
    out = np.zeros((len(waves), len(TEMPLATE_FEATURE_NAMES)), np.float32)
    for i in range(len(waves)):
        out[i] = tracker.features(waves[i], rr[i])
    return out


def model_features(waves: np.ndarray, rr: np.ndarray, names: tuple[str, ...], cfg: SignalConfig) -> np.ndarray:
    """The model input features ``names`` of consecutive beats of one lead from their windows and RR rows."""
    if tuple(names) == RR_FEATURE_NAMES:
        return rr
    return np.concatenate([rr, template_features(waves, rr, cfg)], axis=1)
