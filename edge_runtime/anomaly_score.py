"""The anomaly score of a beat: how badly an autoencoder trained on normal beats reconstructs it.

Training (to set the threshold and to measure AUC) and the device compute it with this one module, from the
constants the task writes into its edge contract, so the device's score of a beat is the score the threshold
was chosen on. No TensorFlow here: the device imports it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from edge_runtime.rr_features import standardise_rr
from edge_runtime.signal_config import RR_FEATURE_NAMES


@dataclass(frozen=True)
class AnomalyScoring:
    """Constants of the score: RR scaling fitted on the training (normal) beats, the weight of the RR part,
    and the threshold (a percentile of held-out normal beats' scores; None until calibrated)."""

    window: int
    rr_mean: tuple[float, ...]
    rr_std: tuple[float, ...]
    #: score = mean squared wave error + rr_weight * mean squared error of the scaled RR features. The wave
    #: part sees morphology (V, F), the RR part prematurity (S beats look normal but come early).
    rr_weight: float = 1.0
    threshold: float | None = None
    #: Percentile of held-out normal scores the threshold sits at (for the record).
    percentile: float | None = None

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1 sample, got {self.window}")
        if len(self.rr_mean) != len(RR_FEATURE_NAMES) or len(self.rr_std) != len(RR_FEATURE_NAMES):
            raise ValueError(f"rr_mean and rr_std need {len(RR_FEATURE_NAMES)} values ({', '.join(RR_FEATURE_NAMES)})")
        if not all(np.isfinite(self.rr_mean)) or not all(s > 0 and np.isfinite(s) for s in self.rr_std):
            raise ValueError("rr_mean must be finite and rr_std positive; refit them on training beats")
        if not (np.isfinite(self.rr_weight) and self.rr_weight >= 0):
            raise ValueError(f"rr_weight must be >= 0, got {self.rr_weight}")
        if self.threshold is not None and not (np.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"threshold must be a positive score, got {self.threshold}")

    @property
    def width(self) -> int:
        """Columns of the model's output: the window followed by the scaled RR features."""
        return self.window + len(RR_FEATURE_NAMES)

    def inputs(self, waves: np.ndarray, rr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's inputs from the beat stream's windows and unscaled RR features; ``ValueError`` on
        shapes the model cannot take or on NaN/inf (a broken beat must not become a score)."""
        waves = np.asarray(waves, np.float32)
        rr = np.asarray(rr, np.float32)
        if waves.ndim != 2 or waves.shape[1] != self.window:
            raise ValueError(f"beat windows must have shape (n, {self.window}), got {waves.shape}")
        if rr.shape != (waves.shape[0], len(RR_FEATURE_NAMES)):
            raise ValueError(f"RR features must have shape ({waves.shape[0]}, {len(RR_FEATURE_NAMES)}), got {rr.shape}")
        if not (np.isfinite(waves).all() and np.isfinite(rr).all()):
            raise ValueError("beat window or RR features hold NaN or infinite values")
        return waves, standardise_rr(rr, np.asarray(self.rr_mean, np.float32), np.asarray(self.rr_std, np.float32))

    def scores(self, waves: np.ndarray, rr_scaled: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
        """One score per beat from the model's inputs (``inputs``) and its reconstruction (n, width)."""
        recon = np.asarray(reconstruction, np.float64)
        if recon.shape != (len(waves), self.width):
            raise ValueError(f"reconstruction must have shape ({len(waves)}, {self.width}), got {recon.shape}")
        wave_err = np.mean((recon[:, :self.window] - waves) ** 2, axis=1)
        rr_err = np.mean((recon[:, self.window:] - rr_scaled) ** 2, axis=1)
        return wave_err + self.rr_weight * rr_err

    def with_threshold(self, threshold: float, percentile: float) -> "AnomalyScoring":
        return AnomalyScoring(self.window, self.rr_mean, self.rr_std, self.rr_weight, float(threshold),
                              float(percentile))

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window, "rr_mean": list(self.rr_mean), "rr_std": list(self.rr_std),
                "rr_weight": self.rr_weight, "threshold": self.threshold, "percentile": self.percentile}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "AnomalyScoring":
        """From an edge contract's ``preprocessing``; ``ValueError`` names what is missing or malformed."""
        try:
            return cls(window=int(raw["window"]), rr_mean=tuple(float(v) for v in raw["rr_mean"]),
                       rr_std=tuple(float(v) for v in raw["rr_std"]), rr_weight=float(raw.get("rr_weight", 1.0)),
                       threshold=None if raw.get("threshold") is None else float(raw["threshold"]),
                       percentile=None if raw.get("percentile") is None else float(raw["percentile"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"anomaly contract constants malformed: {exc}") from exc
