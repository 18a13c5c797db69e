"""Named, seeded perturbations of a raw ECG lead: what a wearable sees that MIT-BIH's MLII lead does not.

Each perturbation acts on one lead in physical units (mV) at its sampling rate and returns the new
signal, its rate, the reference beat samples mapped onto it, and the ranges where no beat can be scored
(a lead-off gap has no beats to find; an amplifier clipped at its rail has lost them). The robustness
suite scores detectors on them and the classifier uses them as augmentation, so they are plain
numpy/scipy and chosen by a short spec: ``perturbation("emg:6")``, ``perturbation("resample:250")``.

The noises themselves are in ``training.data.ecg_noise``, the changes of the lead in
``training.data.lead_perturbations``; this module names them.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from training.data.ecg_noise import BaselineWander, ElectrodeMotion, Emg, Mains
from training.data.lead_perturbations import DcOffset, DcSteps, Gain, Identity, Invert, LeadOff, Resample, Saturation
from training.data.perturbed import MITDB_RAIL_MV, Perturbation, Perturbed, keep_timing


def _param(value: str | None, default: float, what: str) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"{what}: parameter {value!r} is not a number") from exc


_FACTORIES: dict[str, Callable[[str | None], Perturbation]] = {
    "none": lambda p: Identity(),
    "dc_start": lambda p: DcOffset(_param(p, 300.0, "dc_start")),
    "dc_steps": lambda p: DcSteps(_param(p, 300.0, "dc_steps")),
    "invert": lambda p: Invert(),
    "gain": lambda p: Gain(_param(p, 5.0, "gain")),
    "resample": lambda p: Resample(_param(p, 250.0, "resample")),
    "wander": lambda p: BaselineWander(_param(p, 2.0, "wander")),
    "emg": lambda p: Emg(_param(p, 6.0, "emg")),
    "motion": lambda p: ElectrodeMotion(_param(p, 6.0, "motion")),
    "mains": lambda p: Mains(_param(p, 50.0, "mains")),
    "saturation": lambda p: Saturation(rail_mv=_param(p, MITDB_RAIL_MV, "saturation")),
    "leadoff": lambda p: LeadOff(p or "flat"),
}

#: The suite's perturbation classes (each spec is one row of the robustness table).
SUITE: tuple[str, ...] = (
    "none", "dc_start:300", "dc_start:-300", "dc_steps:300", "invert", "gain:0.2", "gain:5",
    "resample:128", "resample:250", "resample:500", "wander:2",
    "emg:12", "emg:6", "emg:0", "motion:12", "motion:6", "motion:0",
    "mains:50", "mains:60", "saturation", "leadoff:flat", "leadoff:rail", "leadoff:nan",
)


def perturbation_names() -> list[str]:
    return sorted(_FACTORIES)


def perturbation(spec: str) -> Perturbation:
    """The perturbation a spec names: ``kind`` or ``kind:parameter`` (``emg:6``, ``gain:0.2``, ``leadoff:nan``)."""
    kind, _, param = spec.strip().partition(":")
    if kind not in _FACTORIES:
        raise ValueError(f"unknown perturbation {spec!r}; known kinds: {', '.join(perturbation_names())}")
    return _FACTORIES[kind](param or None)


def apply_chain(specs: list[str], signal_mv: np.ndarray, fs_hz: float, ann_sample: np.ndarray,
                seed: int) -> Perturbed:
    """Several perturbations in order (e.g. ``["gain:0.2", "emg:12"]``), each with its own derived seed;
    excluded ranges are carried through a resampling."""
    out = keep_timing(np.asarray(signal_mv, np.float64), fs_hz, ann_sample)
    for i, spec in enumerate(specs):
        step = perturbation(spec).apply(out.signal_mv, out.fs_hz, out.ann_sample, seed * 1009 + i)
        ratio = step.fs_hz / out.fs_hz
        carried = tuple((int(a * ratio), int(np.ceil(b * ratio))) for a, b in out.excluded)
        out = Perturbed(step.signal_mv, step.fs_hz, step.ann_sample, carried + step.excluded)
    return out
