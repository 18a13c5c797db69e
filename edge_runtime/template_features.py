"""Beat-versus-template morphology features: how this beat differs from the patient's own dominant beat.

Across patients a ventricular beat of one person can look like a normal beat of another; what is stable is
that an ectopic beat looks unlike *that person's* usual beat (de Chazal 2004, Mondéjar-Guerra 2019). A
device can keep one running template of the dominant morphology (100 numbers) and compare every beat with
it: correlation of the QRS, of the P-wave and T-wave stretches, QRS energy and width against the template's,
and the mean absolute difference. Two RR ratios complete the set (post-RR and the local average against the
local and long averages). Batch code (training) and the stream both call ``TemplateTracker.features`` on
the beats of one lead in order, so a device computes the same numbers bit for bit.

The tracker uses no labels: the template follows beats that match it (QRS correlation above
``ACCEPT_CORR``), so isolated ectopic beats do not pull it; after ``RESTART_AFTER`` rejected beats in a row
(the dominant rhythm changed, or the first beats were ectopic) it starts again from the current beat.
"""
from __future__ import annotations

import numpy as np

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

#: Feature sets a model can be trained on, by name. "rr" is the original input contract (firmware's C
#: front-end computes it); "rr+template" adds the template features (Python edge runtime only so far).
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "rr": RR_FEATURE_NAMES,
    "rr+template": RR_FEATURE_NAMES + TEMPLATE_FEATURE_NAMES,
}

ACCEPT_CORR = 0.7  # a beat whose QRS correlates at least this well updates the template
TEMPLATE_BEATS = 16  # exponential average over about this many accepted beats
RESTART_AFTER = 12  # rejected beats in a row after which the template starts again


def feature_set_named(name: str) -> tuple[str, ...]:
    try:
        return FEATURE_SETS[name]
    except KeyError:
        raise ValueError(f"unknown feature set {name!r}; choose one of {sorted(FEATURE_SETS)}") from None


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b)) / den if den > 1e-9 else 0.0


def _width(qrs: np.ndarray) -> float:
    """Area over peak of |QRS| in samples: a smooth QRS width that needs no onset/offset detection."""
    mag = np.abs(qrs)
    return float(mag.sum() / max(float(mag.max()), 1e-6))


class TemplateTracker:
    """The running dominant-beat template of one lead and the features of each beat against it."""

    def __init__(self, cfg: SignalConfig) -> None:
        fs = cfg.model_fs_hz
        centre = cfg.window_before // cfg.decimation
        half_qrs = round(0.08 * fs)
        self._qrs = slice(centre - half_qrs, centre + half_qrs + 1)
        self._p = slice(0, max(2, centre - round(0.06 * fs)))
        self._t = slice(min(cfg.window_length - 2, centre + round(0.10 * fs)), cfg.window_length)
        self._template: np.ndarray | None = None
        self._accepted = 0
        self._rejected = 0

    def features(self, wave: np.ndarray, rr_row: np.ndarray) -> np.ndarray:
        """Features of this beat (``wave`` as the model sees it, ``rr_row`` its ``RR_FEATURE_NAMES`` row)
        against the template of the beats before it; then the template learns from the beat."""
        w = np.asarray(wave, np.float64)
        if self._template is None:
            self._template = w.copy()
        t = self._template
        q, p, tt = self._qrs, self._p, self._t
        corr_qrs = _corr(w[q], t[q])
        energy = np.log((float(np.dot(w[q], w[q])) + 1e-3) / (float(np.dot(t[q], t[q])) + 1e-3))
        width = np.log(_width(w[q]) / _width(t[q]))
        post, local, long = (float(v) for v in rr_row[1:4])
        out = np.array([corr_qrs, _corr(w[p], t[p]), _corr(w[tt], t[tt]), energy, width,
                        float(np.mean(np.abs(w - t))), post / local, local / long], np.float32)
        self._learn(w, corr_qrs)
        return out

    def _learn(self, w: np.ndarray, corr_qrs: float) -> None:
        if corr_qrs >= ACCEPT_CORR or self._accepted == 0:
            self._accepted += 1
            rate = 1.0 / min(self._accepted, TEMPLATE_BEATS)
            self._template = self._template + rate * (w - self._template)
            self._rejected = 0
            return
        self._rejected += 1
        if self._rejected >= RESTART_AFTER:
            self._template = w.copy()
            self._accepted, self._rejected = 1, 0


def template_features(waves: np.ndarray, rr: np.ndarray, cfg: SignalConfig) -> np.ndarray:
    """Template features of consecutive beats of one lead (rows in time order): ``(n, 8)`` float32."""
    tracker = TemplateTracker(cfg)
    out = np.zeros((len(waves), len(TEMPLATE_FEATURE_NAMES)), np.float32)
    for i in range(len(waves)):
        out[i] = tracker.features(waves[i], rr[i])
    return out
